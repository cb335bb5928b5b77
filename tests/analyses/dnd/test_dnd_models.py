"""DnD's default Flax models, loaded offline from local directories."""

import os

import jax
import numpy as np
from PIL import Image
import pytest

from jax_dissect.analyses.dnd import models
from jax_dissect.runtime import hub as hf_loading
from tests.helpers import dnd_models as dnd_testing


def _images(n):
  return [Image.open(p).convert("RGB")
          for p in dnd_testing.shared_photos(n)]


def test_captioner_saves_and_loads_from_a_directory(tmp_path):
  cap = dnd_testing.tiny_captioner(seed=1)
  cap.model.save_pretrained(tmp_path, params=cap.params)
  cap.tokenizer.save_pretrained(tmp_path)
  cap.image_processor.save_pretrained(tmp_path)
  images = _images(3)
  want = cap(images)
  assert len(want) == 3 and all(isinstance(c, str) and c for c in want)
  loaded = models.FlaxCaptioner.from_pretrained(str(tmp_path),
                                                max_new_tokens=6)
  assert loaded(images) == want


def test_causal_llm_batches_equal_single_prompts(tmp_path):
  llm = dnd_testing.tiny_llm(seed=2)
  prompts = ["Caption: a dog on the road\nLabel:", "red blue green",
             "Descriptions: a cat; a bird; a car in the street\nLabel:"]
  batch = llm.batch(prompts)
  assert batch == [llm(p) for p in prompts]  # Left padding is harmless.
  llm.model.save_pretrained(tmp_path, params=llm.params)
  llm.tokenizer.save_pretrained(tmp_path)
  loaded = models.FlaxTextGenerator.from_pretrained(str(tmp_path),
                                                    max_new_tokens=4)
  assert loaded.batch(prompts) == batch
  lazy = models.resolve(str(tmp_path), "llm")  # Loaded on first use.
  assert isinstance(lazy, models.Lazy) and lazy._model is None
  assert lazy.identity().startswith(f"llm:{tmp_path}#")
  assert isinstance(lazy("a dog"), str)
  assert isinstance(lazy.load(), models.FlaxTextGenerator)


def test_seq2seq_llm(tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  tok = dnd_testing.word_tokenizer()
  config = transformers.BartConfig(
      vocab_size=len(tok), d_model=32, encoder_layers=1, decoder_layers=1,
      encoder_attention_heads=4, decoder_attention_heads=4,
      encoder_ffn_dim=37, decoder_ffn_dim=37, max_position_embeddings=64,
      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
      eos_token_id=tok.eos_token_id,
      decoder_start_token_id=tok.bos_token_id, forced_eos_token_id=None)
  model = transformers.FlaxBartForConditionalGeneration(config,
                                                        _do_init=False)
  params = hf_loading.random_params(model.params_shape_tree, 3)
  model.save_pretrained(tmp_path, params=params)
  tok.save_pretrained(tmp_path)
  llm = models.FlaxTextGenerator.from_pretrained(str(tmp_path),
                                                 max_new_tokens=3)
  assert llm.seq2seq
  answers = llm.batch(["a red car", "the dog in the grass"])
  assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
  assert answers == [llm("a red car"), llm("the dog in the grass")]


def test_tied_llama_checkpoint_gets_its_output_layer(tmp_path):
  """FlaxLlama has no tied head: a tied checkpoint (SmolLM2) lacks lm_head."""
  import transformers  # pylint: disable=g-import-not-at-top
  tok = dnd_testing.word_tokenizer()
  config = transformers.LlamaConfig(
      vocab_size=len(tok), hidden_size=32, intermediate_size=37,
      num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
      tie_word_embeddings=True, pad_token_id=tok.pad_token_id,
      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
  model = transformers.FlaxLlamaForCausalLM(config, _do_init=False)
  params = hf_loading.random_params(model.params_shape_tree, 4)
  del params["lm_head"]
  model.save_pretrained(tmp_path, params=params)
  tok.save_pretrained(tmp_path)
  llm = models.FlaxTextGenerator.from_pretrained(str(tmp_path),
                                                 max_new_tokens=2)
  np.testing.assert_array_equal(
      np.asarray(llm.params["lm_head"]["kernel"]),
      np.asarray(params["model"]["embed_tokens"]["embedding"]).T)
  assert isinstance(llm("a dog"), str)


def test_missing_directory_is_a_load_error(tmp_path):
  lazy = models.resolve(str(tmp_path / "nowhere") + "/", "llm")
  with pytest.raises(models.ModelLoadError, match="does not exist"):
    lazy("hello")


def test_diffusion_generator_tiny_pipeline(tmp_path):
  """Needs diffusers 0.39.0 (pip install -e '.[diffusion]'); skipped
  without it."""
  diffusers = pytest.importorskip("diffusers")
  if not hasattr(diffusers, "FlaxStableDiffusionPipeline"):
    pytest.skip(f"diffusers {diffusers.__version__} has no Flax pipelines")
  import transformers  # pylint: disable=g-import-not-at-top

  from tests.helpers import tiny_clip as test_clip  # pylint: disable=g-import-not-at-top
  test_clip.write_tiny_tokenizer(tmp_path / "tok")
  tok = transformers.CLIPTokenizer(
      vocab_file=str(tmp_path / "tok" / "vocab.json"),
      merges_file=str(tmp_path / "tok" / "merges.txt"), model_max_length=16)
  text = transformers.FlaxCLIPTextModel(transformers.CLIPTextConfig(
      vocab_size=len(tok), hidden_size=32, intermediate_size=37,
      num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=16,
      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
  unet = diffusers.FlaxUNet2DConditionModel(
      sample_size=8, in_channels=4, out_channels=4,
      down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
      up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
      block_out_channels=(32, 64), layers_per_block=1,
      cross_attention_dim=32, attention_head_dim=8)
  vae = diffusers.FlaxAutoencoderKL(
      in_channels=3, out_channels=3,
      down_block_types=("DownEncoderBlock2D",) * 2,
      up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64),
      latent_channels=4, sample_size=16)
  scheduler = diffusers.FlaxPNDMScheduler(
      beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
      skip_prk_steps=True)
  pipe = diffusers.FlaxStableDiffusionPipeline(
      vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
      scheduler=scheduler, safety_checker=None, feature_extractor=None)
  params = {"text_encoder": text.params,
            "unet": unet.init_weights(jax.random.key(0)),
            "vae": vae.init_weights(jax.random.key(1)),
            "scheduler": scheduler.create_state()}
  gen = models.FlaxDiffusionGenerator(pipe, params, "tiny-sd",
                                      num_inference_steps=2)
  a = gen("One realistic image of a dog", 2, 0)
  assert a.shape == (2, 16, 16, 3) and a.dtype == np.uint8
  np.testing.assert_array_equal(a, gen("One realistic image of a dog", 2, 0))
  assert not np.array_equal(a, gen("One realistic image of a dog", 2, 1))
  assert os.fspath(gen.identity()).startswith("FlaxDiffusionGenerator:")
