"""Tiny models and data for the Describe-and-Dissect tests.

- shared_photos(n): the first photos of the shared imagenet_sample
  (configs.shared_data finds the data).
- TinyCNN / tiny_target(): a seeded two-conv CNN on 32x32 inputs.
- tiny_captioner(): a random FlaxVisionEncoderDecoderModel (ViT + GPT-2,
  width 32) with a word-level tokenizer, wrapped in dnd.models.FlaxCaptioner.
- tiny_llm(): a random FlaxGPT2LMHeadModel with the same tokenizer, in
  dnd.models.FlaxTextGenerator.
- noise_generator: a seeded text-to-image callable (noise images whose
  colours depend on the prompt).
- tiny_clip(): a random jax_dissect.clip.ClipEmbedder (tests/test_clip.py's).
"""

import hashlib
import os

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import shared_data
from jax_dissect import clip
from jax_dissect.analyses.dnd import models as dnd_models
from jax_dissect.analyses.dnd import target as target_lib
from jax_dissect.data import preprocess
from jax_dissect.models import spec as spec_lib

WORDS = ("a dog cat bird car tree house red blue green yellow small big "
         "photo of the on in with and background pattern fish water sky "
         "grass road street flower table man woman child ball toy").split()
SMALL = preprocess.ImageTransform(resize=32, crop=32, mean=(0.5,) * 3,
                                  std=(0.25,) * 3)


def shared_photos(n: int) -> list[str]:
  folder = os.path.join(shared_data.require(), "imagenet_sample")
  photos = sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))
  if len(photos) < n:
    pytest.fail(f"{folder} has {len(photos)} photos; the tests need {n}")
  return [os.path.join(folder, f) for f in photos[:n]]


def class_name(path: str) -> str:
  """"n01440764_tench.jpg" -> "tench"."""
  stem = os.path.splitext(os.path.basename(path))[0]
  return stem.split("_", 1)[1].replace("_", " ")


class TinyCNN(nn.Module):
  """Two conv layers (16x16 maps at 32x32 input), pooled head."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
    x = nn.relu(nn.Conv(6, (3, 3), strides=2, name="conv2")(x))
    return nn.Dense(4, name="head")(x.mean((1, 2)))


def tiny_target(batch_size=16) -> target_lib.Target:
  module = TinyCNN()
  abstract = jax.eval_shape(module.init, jax.random.key(0),
                            np.zeros((1, 32, 32, 3), np.float32))
  variables = spec_lib.random_variables(abstract, seed=0)
  return target_lib.Target(module, variables, SMALL, name="tiny_cnn",
                           batch_size=batch_size)


def word_tokenizer():
  """A word-level fast tokenizer over WORDS with [PAD] [UNK] [BOS] [EOS]."""
  import tokenizers  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  specials = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
  vocab = {w: i for i, w in enumerate(specials + list(WORDS))}
  tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, "[UNK]"))
  tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  tok.decoder = tokenizers.decoders.WordPiece()  # Joins words with spaces.
  return transformers.PreTrainedTokenizerFast(
      tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
      bos_token="[BOS]", eos_token="[EOS]")


def _mute_specials(params, path, num_special=4):
  """Zero the special tokens' embedding rows so greedy decoding of a random
  model emits words (a tied head then gives them logit 0)."""
  node = params
  for key in path:
    node = node[key]
  node["embedding"] = np.asarray(node["embedding"]).copy()
  node["embedding"][:num_special] = 0.0
  return params


def _gpt2_config(tok, **kw):
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers.GPT2Config(
      vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256,
      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
      pad_token_id=tok.pad_token_id, **kw)


def tiny_captioner(seed=0, max_new_tokens=6) -> dnd_models.FlaxCaptioner:
  import transformers  # pylint: disable=g-import-not-at-top

  from jax_dissect.runtime import hub as hf_loading  # pylint: disable=g-import-not-at-top
  tok = word_tokenizer()
  vit = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=37,
                               image_size=32, patch_size=8)
  gpt = _gpt2_config(tok, add_cross_attention=True, is_decoder=True)
  config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(
      vit, gpt)
  config.decoder_start_token_id = tok.bos_token_id
  config.pad_token_id = tok.pad_token_id
  config.eos_token_id = tok.eos_token_id
  model = transformers.FlaxVisionEncoderDecoderModel(config, seed=seed)
  params = hf_loading.random_params(model.params_shape_tree, seed)
  params = _mute_specials(params, ("decoder", "transformer", "wte"))
  processor = transformers.ViTImageProcessor(
      size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
      image_std=[0.5] * 3)
  return dnd_models.FlaxCaptioner(model, params, processor, tok,
                                  f"tiny-captioner(seed={seed})",
                                  max_new_tokens=max_new_tokens,
                                  batch_size=8)


def tiny_llm(seed=0, max_new_tokens=4) -> dnd_models.FlaxTextGenerator:
  import transformers  # pylint: disable=g-import-not-at-top

  from jax_dissect.runtime import hub as hf_loading  # pylint: disable=g-import-not-at-top
  tok = word_tokenizer()
  model = transformers.FlaxGPT2LMHeadModel(_gpt2_config(tok), _do_init=False)
  params = hf_loading.random_params(model.params_shape_tree, seed)
  params = _mute_specials(params, ("transformer", "wte"))
  return dnd_models.FlaxTextGenerator(model, params, tok,
                                      f"tiny-llm(seed={seed})",
                                      max_new_tokens=max_new_tokens,
                                      batch_size=8)


class NoiseGenerator:
  """(prompt, n, seed) -> n seeded noise images tinted by the prompt."""

  def __init__(self, size=32):
    self.size = size
    self.calls = 0

  def identity(self):
    return f"noise-generator({self.size})"

  def __call__(self, prompt, num_images, seed):
    self.calls += 1
    digest = hashlib.sha256(f"{prompt}|{seed}".encode()).digest()
    rng = np.random.default_rng(list(digest[:8]))
    tint = rng.uniform(0, 255, size=3)
    noise = rng.normal(0, 40, size=(num_images, self.size, self.size, 3))
    return np.clip(tint + noise, 0, 255).astype(np.uint8)


def tiny_clip(tmp_dir) -> clip.ClipEmbedder:
  import transformers  # pylint: disable=g-import-not-at-top

  from tests.helpers import tiny_clip as test_clip  # pylint: disable=g-import-not-at-top
  test_clip.write_tiny_tokenizer(tmp_dir)
  tok = transformers.CLIPTokenizerFast(
      vocab_file=os.path.join(tmp_dir, "vocab.json"),
      merges_file=os.path.join(tmp_dir, "merges.txt"), model_max_length=77)
  return clip.ClipEmbedder.random(test_clip.TINY, seed=0, tokenizer=tok)


class CountingCaptioner:
  """Wraps a captioner and counts the images it was asked about."""

  def __init__(self, inner):
    self.inner, self.images = inner, 0

  def identity(self):
    return dnd_models_identity(self.inner)

  def __call__(self, images):
    self.images += len(images)
    return self.inner(images)


def dnd_models_identity(model):
  from jax_dissect.analyses.dnd import candidates  # pylint: disable=g-import-not-at-top
  return candidates.model_identity(model)


# ---------------------------------------------------------------------------
# Models by "package.module:function" spec, for the dnd analysis and its script
# (`--captioner=tests.helpers.dnd_models:captioner`): loaded on first use.

captioner = dnd_models.Lazy(tiny_captioner, "tiny-captioner(seed=0)")
llm = dnd_models.Lazy(tiny_llm, "tiny-llm(seed=0)")
generator = NoiseGenerator()


def named_captioner(images):
  """A cheap captioner: names each image by a digest of its pixels."""
  return [f"thing {hashlib.sha256(np.asarray(im).tobytes()).hexdigest()[:6]}"
          for im in images]


def label_llm(prompt):
  """Keeps captions as they are; summarizes every list as "a label"."""
  if "Descriptions:" in prompt:
    return "a label"
  return prompt.rstrip().splitlines()[-2].split(":", 1)[1]  # The caption.


def empty_llm(prompt):
  """label_llm failing: it answers the summary prompts with nothing."""
  return "  " if "Descriptions:" in prompt else label_llm(prompt)


# One model to the store: a rerun with label_llm is a retry of empty_llm.
label_llm.identity = empty_llm.identity = "cheap-llm"


def flat_generator(prompt, num_images, seed):
  """Returns images without a colour axis: the wrong shape."""
  del prompt, seed
  return np.zeros((num_images, 8, 8), np.uint8)
