"""Tests of SigLIP as the backbone of P (jax_dissect.clip.siglip.embedder)
and of choosing the backbone by config.json (clip.load_backbone).

A tiny random SigLIP (width 32, 2 layers) with a SentencePiece tokenizer
trained here on the 20k concepts is saved as a checkpoint directory by
jax_dissect.clip.siglip.save and loaded back through load_backbone, the
path describe_neurons' clip_model takes. (Agreement with transformers'
PyTorch SiglipModel is tests/clip/test_siglip.py.) Nothing is downloaded.
"""

import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from jax_dissect import clip
from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import convert
from jax_dissect.clip.siglip import load
from jax_dissect.clip.siglip import model as model_lib
from jax_dissect.clip.siglip import save
from tests.helpers import siglip as siglip_testing
from tests.helpers import tiny_clip as tiny

TEXTS = ["dog", "a photo of a cat", "golden retriever", "snow", "red brick",
         "the quick brown fox jumps over the lazy dog near the old river "
         "bank at dawn while birds sing", "sky", "wooden chair", "x"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  return siglip_testing.write_tokenizer(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok_dir):
  return siglip_testing.write_tiny_siglip(
      tmp_path_factory.mktemp("siglip") / "model", tok_dir, seed=0)


@pytest.fixture(scope="module")
def siglip(model_dir):
  return clip.load_backbone(model_dir)


def _pixels(n, seed=2):
  return np.random.default_rng(seed).normal(size=(n, 32, 32, 3)).astype(
      np.float32)


def _unit(x):
  x = np.asarray(x, np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_load_backbone_picks_the_architecture(model_dir, siglip, tmp_path):
  assert clip.read_model_type(model_dir) == "siglip"
  assert isinstance(siglip, clip.SiglipEmbedder)
  assert isinstance(siglip, clip.Embedder) and siglip.model_type == "siglip"
  # load_embedder (describe_neurons' clip_model) takes the same path.
  assert isinstance(clip.load_embedder(model_dir), clip.SiglipEmbedder)
  # A CLIP directory gives a ClipEmbedder.
  tiny.write_tiny_tokenizer(tmp_path / "clip_tok")
  clip_model = clip.ClipEmbedder.random(tiny.TINY, tokenizer_dir=str(
      tmp_path / "clip_tok"))
  clip_model.save_pretrained(tmp_path / "clip")
  assert clip.read_model_type(str(tmp_path / "clip")) == "clip"
  assert isinstance(clip.load_backbone(tmp_path / "clip"), clip.ClipEmbedder)


def test_embeddings_are_the_towers_normalised(model_dir, siglip):
  """embed_pixels / embed_texts equal the Flax towers' outputs, L2
  normalised, whatever the batch size; P is their cosine."""
  ckpt = load.load(model_dir)
  pixels = _pixels(7)
  want_image = _unit(ckpt.image_embeds(pixels))
  want_text = _unit(ckpt.text_embeds(ckpt.tokenize(TEXTS)))
  for batch in (1, 3, 7):
    np.testing.assert_allclose(siglip.embed_pixels(pixels, batch_size=batch),
                               want_image, atol=1e-6)
    np.testing.assert_allclose(siglip.embed_texts(TEXTS, batch_size=batch),
                               want_text, atol=1e-6)
  p = clip.concept_activations(siglip.embed_pixels(pixels),
                               siglip.embed_texts(TEXTS))
  np.testing.assert_allclose(
      p, np.asarray(model_lib.cosine(ckpt.image_embeds(pixels),
                                     ckpt.text_embeds(ckpt.tokenize(TEXTS)))),
      atol=1e-6)
  # Not vacuous: the embeddings differ across inputs.
  assert np.ptp(p) > 0.1 and len({tuple(np.round(r, 4)) for r in p}) == 7


def test_images_from_files_use_the_processor_transform(siglip):
  """embed_images (paths, PIL, arrays) = transform, then embed_pixels."""
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (40 + 7 * i, 50, 3), np.uint8)
            for i in range(5)]
  pixels = np.stack([siglip.transform(x) for x in images])
  assert siglip.transform.resize_mode == "square"
  np.testing.assert_array_equal(siglip.embed_images(images, batch_size=2),
                                siglip.embed_pixels(pixels, batch_size=2))


def test_on_8_devices_bit_equal_to_one(model_dir):
  one = clip.load_backbone(model_dir, devices=1)
  every = clip.load_backbone(model_dir, devices="auto")
  assert every.data_parallel.num_devices == 8
  assert one.identity() == every.identity()
  pixels = _pixels(23)
  np.testing.assert_array_equal(every.embed_pixels(pixels, batch_size=2),
                                one.embed_pixels(pixels, batch_size=2))
  texts = TEXTS * 3
  np.testing.assert_array_equal(every.embed_texts(texts, batch_size=2),
                                one.embed_texts(texts, batch_size=2))
  shares = [one.embed_texts(texts, batch_size=2, share=(i, 3))
            for i in range(3)]
  np.testing.assert_array_equal(sum(shares), one.embed_texts(texts, 2))


def test_bfloat16(model_dir, siglip):
  half = clip.load_backbone(model_dir, compute_dtype="bfloat16")
  assert half.identity() != siglip.identity()  # The cache key changes.
  assert {str(x.dtype) for x in jax.tree_util.tree_leaves(half.params)} == {
      "bfloat16"}
  pixels = _pixels(4)
  got, want = half.embed_pixels(pixels), siglip.embed_pixels(pixels)
  assert got.dtype == np.float32
  assert 1e-6 < np.abs(got - want).max() < 0.05
  assert np.abs(half.embed_texts(TEXTS) - siglip.embed_texts(TEXTS)
                ).max() < 0.05


def test_identity_is_the_weights_tokenizer_and_settings(
    model_dir, siglip, tok_dir, tmp_path):
  key = siglip.identity()
  assert key.startswith(f"{model_dir}@")
  assert clip.load_backbone(model_dir).identity() == key
  copy = shutil.copytree(model_dir, tmp_path / "copy")
  assert clip.load_backbone(copy).identity().split("@")[1] == key.split(
      "@")[1]
  other = siglip_testing.write_tiny_siglip(tmp_path / "other", tok_dir,
                                           seed=1)
  assert clip.load_backbone(other).identity().split("@")[1] != key.split(
      "@")[1]
  lower = clip.SiglipEmbedder.from_pretrained(model_dir, lowercase=True)
  assert lower.identity() != key


def test_long_texts_truncated_with_warning(siglip, caplog):
  ids, truncated = siglip.tokenize(TEXTS)
  assert truncated == [5]  # The one text of more than 16 tokens.
  assert all(len(row) == siglip.max_length for row in ids)
  with caplog.at_level(logging.WARNING):
    siglip.embed_texts(TEXTS)
  assert "1 of 9 texts are longer than SigLIP's 16 tokens" in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    siglip.embed_texts(TEXTS[:5])
  assert "truncated" not in caplog.text


@pytest.mark.parametrize("model_type", ["siglip", "siglip2"])
def test_saved_weights_convert_back(model_type, tok_dir, tmp_path):
  """save.to_state_dict is the converter's inverse (both patch layouts),
  and a saved random model reloads with the same embeddings."""
  values = json.loads(json.dumps(siglip_testing.TINY_CONFIG))
  values["model_type"] = model_type
  if model_type == "siglip2":
    del values["vision_config"]["image_size"]
    values["vision_config"]["num_patches"] = 16
  cfg = config_lib.from_dict(values)
  params = jax.tree_util.tree_map(np.asarray, model_lib.init_params(cfg, 3))
  state = save.to_state_dict(params, cfg)
  back = convert.convert_state_dict(state, cfg)
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)
  if model_type == "siglip2":
    assert state["vision_model.embeddings.patch_embedding.weight"].ndim == 2
  tokenizer = load.load_tokenizer(tok_dir, "siglip")
  made = clip.SiglipEmbedder.random(values, tokenizer, seed=4)
  out = made.save_pretrained(tmp_path / model_type)
  assert set(load_file(os.path.join(out, "model.safetensors"))) == set(
      save.to_state_dict(jax.device_get(made.params), cfg)) | {
          "logit_scale", "logit_bias"}
  again = clip.load_backbone(out)
  assert again.model_type == model_type and again.config == cfg
  pixels = _pixels(3)
  np.testing.assert_array_equal(again.embed_pixels(pixels),
                                made.embed_pixels(pixels))
  np.testing.assert_array_equal(again.embed_texts(TEXTS),
                                made.embed_texts(TEXTS))


def _one_line(err):
  message = str(err.value)
  assert "\n" not in message and len(message) <= 300, message
  return message


def test_bad_checkpoints_are_one_line(model_dir, tmp_path):
  vit = shutil.copytree(model_dir, tmp_path / "vit")
  values = json.loads((vit / "config.json").read_text())
  (vit / "config.json").write_text(json.dumps({**values, "model_type": "vit"}))
  with pytest.raises(clip.ClipLoadError) as err:
    clip.load_backbone(vit)
  message = _one_line(err)
  assert "'vit'" in message and "clip, siglip, siglip2" in message
  # The same through describe_neurons' path and CLIP's own loader.
  with pytest.raises(clip.ClipLoadError, match="clip, siglip, siglip2"):
    clip.load_embedder(str(vit))
  with pytest.raises(clip.ClipLoadError, match="not CLIP"):
    clip.ClipEmbedder.from_pretrained(model_dir)

  no_tok = shutil.copytree(model_dir, tmp_path / "no_tok")
  os.remove(no_tok / "spiece.model")
  with pytest.raises(load.SiglipLoadError) as err:
    clip.load_backbone(no_tok)
  assert "spiece.model" in _one_line(err)

  with pytest.raises(clip.ClipLoadError) as err:
    clip.load_backbone(tmp_path / "nowhere" / "model")
  assert "does not exist" in _one_line(err)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(clip.ClipLoadError) as err:
    clip.load_backbone(empty)
  assert "no config.json" in _one_line(err)


def test_clip_directory_without_tokenizer_names_the_files(tmp_path):
  tiny.write_tiny_tokenizer(tmp_path / "tok")
  model = clip.ClipEmbedder.random(tiny.TINY, tokenizer_dir=str(
      tmp_path / "tok"))
  model.model.save_pretrained(tmp_path / "clip", params=model.params)
  with pytest.raises(clip.ClipLoadError) as err:
    clip.load_backbone(tmp_path / "clip")
  message = _one_line(err)
  assert "tokenizer.json" in message and "merges.txt" in message
