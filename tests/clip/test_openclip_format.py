"""OpenCLIP checkpoints in Hugging Face CLIP format load through CLIP's path.

OpenCLIP models published as transformers CLIPModel checkpoints
(model_type "clip") differ from OpenAI's in widths, activation (GELU, not
quick GELU), layer-norm epsilon and the text end token. A tiny random
CLIPModel with such a config, unlike any OpenAI one (towers of different
widths and depths, a projection of yet another size, exact GELU, eps 1e-5,
eos_token_id that is not 2), is saved by transformers' PyTorch CLIPModel in
a subprocess (torch_reference/clip_embeddings.py) and loaded here through
clip.load_backbone / load_embedder, describe_neurons' clip_model path; its
embeddings and P must equal PyTorch's.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jax_dissect import clip
from tests import helpers
from tests.helpers import tiny_clip as tiny

HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  if not HAVE_TORCH:
    pytest.skip("torch is not installed (pip install -e '.[torch]')")
  import transformers  # pylint: disable=g-import-not-at-top
  work = tmp_path_factory.mktemp("openclip")
  tiny.write_tiny_tokenizer(work / "tokenizer")
  tok = transformers.CLIPTokenizerFast(
      vocab_file=str(work / "tokenizer" / "vocab.json"),
      merges_file=str(work / "tokenizer" / "merges.txt"), model_max_length=77)
  tok.save_pretrained(work / "tokenizer")
  config = {
      "projection_dim": 24, "logit_scale_init_value": 2.0,
      "vision_config": {"hidden_size": 48, "intermediate_size": 80,
                        "num_hidden_layers": 3, "num_attention_heads": 3,
                        "image_size": 32, "patch_size": 8,
                        "hidden_act": "gelu", "layer_norm_eps": 1e-5},
      "text_config": {"hidden_size": 40, "intermediate_size": 64,
                      "num_hidden_layers": 2, "num_attention_heads": 5,
                      "hidden_act": "gelu", "layer_norm_eps": 1e-5,
                      "vocab_size": len(tok),
                      "bos_token_id": tok.bos_token_id,
                      "eos_token_id": tok.eos_token_id,
                      "pad_token_id": tok.pad_token_id}}
  assert tok.eos_token_id != 2  # Pooled at the first end token.
  (work / "config.json").write_text(json.dumps(config))
  rng = np.random.default_rng(0)
  pixels = rng.normal(size=(5, 32, 32, 3)).astype(np.float32)
  np.save(work / "pixels.npy", pixels)
  texts = ["the dog", "a", "dog the dog", "zz yy xx", "ab cd ef gh"]
  (work / "texts.json").write_text(json.dumps(texts))
  out = subprocess.run(
      [sys.executable,
       os.path.join(helpers.REPO, "torch_reference", "clip_embeddings.py"),
       str(work)], env={**os.environ, "USE_TORCH": "1"},
      capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return work, pixels, texts


def test_openclip_style_config_loads_through_the_clip_path(reference):
  work, pixels, texts = reference
  ref = np.load(work / "reference.npz")
  model_dir = str(work / "model_safetensors")
  assert clip.read_model_type(model_dir) == "clip"
  embedder = clip.load_embedder(model_dir)
  assert isinstance(embedder, clip.ClipEmbedder)
  cfg = embedder.config
  assert (cfg.vision_config.hidden_act, cfg.text_config.hidden_act) == (
      "gelu", "gelu")
  assert embedder.embed_dim == 24 and cfg.text_config.hidden_size == 40
  image = embedder.embed_pixels(pixels, batch_size=2)
  text = embedder.embed_texts(texts, batch_size=2)
  np.testing.assert_allclose(image, ref["image_emb"], atol=1e-5)
  np.testing.assert_allclose(text, ref["text_emb"], atol=1e-5)
  np.testing.assert_allclose(clip.concept_activations(image, text),
                             ref["p"], atol=1e-5)
  # Not vacuous: P varies across images and texts.
  assert np.ptp(ref["p"]) > 0.1
