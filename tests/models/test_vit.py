"""Hugging Face ViT and CLIP image tower as targets (tiny random models).

Nothing is downloaded. The PyTorch reference runs in a subprocess
(tests/vit_torch_reference.py) because the library imports transformers with
USE_TORCH=0.
"""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from configs import shared_data
import jax_dissect
from jax_dissect import clip
from jax_dissect.data import preprocess
from jax_dissect.models import capture as activations
from jax_dissect.models import convert
from jax_dissect.models import get_model
from jax_dissect.models import hf
from tests import helpers

HAVE_TORCH = importlib.util.find_spec("torch") is not None
REPO = helpers.REPO
PHOTOS = sorted(glob.glob(shared_data.path("imagenet_sample", "*.jpg")))[:1]
# A tiny ViT: 4 blocks of width 32 on 32x32 images, patch 8 (17 tokens).
TINY_VIT = {"hidden_size": 32, "num_hidden_layers": 4,
            "num_attention_heads": 4, "intermediate_size": 37,
            "image_size": 32, "patch_size": 8, "num_labels": 5}
BLOCKS = ("vit.encoder.layer.0", "vit.encoder.layer.3")


def make_tiny_vit():
  """A `module:factory` target for the pipeline: the tiny random ViT."""
  return hf.vit_spec("tiny_vit", random_config=TINY_VIT)


def _pixels(n=3, size=32, seed=0):
  return np.random.default_rng(seed).normal(size=(n, size, size, 3)).astype(
      np.float32)


@pytest.fixture(scope="module")
def tiny_vit():
  return hf.load_vit("random", seed=1, random_config=TINY_VIT)


def test_registry_entries():
  vit, clip_vision = get_model("vit_b16"), get_model("clip_vision")
  assert vit.default_weights == "google/vit-base-patch16-224"
  assert vit.transform == preprocess.VIT_EVAL and vit.input_size == 224
  assert clip_vision.default_weights == clip.DEFAULT_MODEL
  assert clip_vision.transform == preprocess.CLIP_EVAL
  layers = activations.list_layers(vit.build(), _abstract(vit),
                                  (1, 224, 224, 3))
  for layer in hf.VIT_PROFILE_LAYERS:
    assert layer in layers
  assert layers["vit.encoder.layer.9"] == (1, 197, 768)
  assert layers["classifier"] == (1, 1000)
  tower = activations.list_layers(clip_vision.build(), _abstract(clip_vision),
                                  (1, 224, 224, 3))
  assert tower["vision_model.encoder.layers.11"] == (1, 197, 768)
  assert tower["visual_projection"] == (1, 512)


def _abstract(spec):
  """Variables as ShapeDtypeStructs: nothing is computed."""
  return convert.abstract_variables(spec.build(), (1, spec.input_size,
                                                   spec.input_size, 3))


def test_vit_layers_and_names(tiny_vit):
  module, variables = tiny_vit
  layers = jax_dissect.list_layers(module, variables, (2, 32, 32, 3))
  for i in range(4):
    assert layers[f"vit.encoder.layer.{i}"] == (2, 17, 32)
  assert layers["vit.encoder.layer.3.output"] == (2, 17, 32)
  assert layers["vit.encoder.layer.3.attention"] == (2, 17, 32)
  assert layers["vit.embeddings"] == (2, 17, 32)
  assert layers["classifier"] == (2, 5)
  assert list(layers)[-1] == "classifier"


def test_token_pooling(tiny_vit):
  module, variables = tiny_vit
  x = _pixels()
  full = activations.capture_outputs(module, variables, x, BLOCKS)
  cls = activations.capture_pooled(module, variables, x, BLOCKS)
  mean = activations.capture_pooled(module, variables, x, BLOCKS,
                                    token_pool="mean")
  for layer in BLOCKS:
    assert full[layer].shape == (3, 17, 32)
    np.testing.assert_allclose(cls[layer], full[layer][:, 0], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(mean[layer], full[layer].mean(1), rtol=1e-5,
                               atol=1e-6)
  with pytest.raises(ValueError, match=r"token_pool='first'; allowed: "
                     r"cls, mean, patch_mean, patch_max"):
    activations.capture_pooled(module, variables, x, BLOCKS,
                               token_pool="first")


def test_patch_token_pooling(tiny_vit):
  """patch_mean / patch_max pool the 16 patch tokens, not the CLS token."""
  module, variables = tiny_vit
  x = _pixels()
  full = activations.capture_outputs(module, variables, x, BLOCKS)
  for mode, reduce in (("patch_mean", np.mean), ("patch_max", np.max)):
    got = activations.capture_pooled(module, variables, x, BLOCKS,
                                     token_pool=mode)
    for layer in BLOCKS:
      want = reduce(np.asarray(full[layer])[:, 1:], axis=1)
      np.testing.assert_allclose(got[layer], want, rtol=1e-5, atol=1e-6)
      if mode == "patch_mean":  # Not the mean of every token (CLS differs).
        assert not np.allclose(got[layer], np.asarray(full[layer]).mean(1),
                               atol=1e-4)


def test_apply_fn_through_the_hf_model_call(tiny_vit):
  """A Hugging Face model's own __call__ (NCHW) as apply_fn: same values."""
  import transformers  # pylint: disable=g-import-not-at-top
  module, variables = tiny_vit
  model = transformers.FlaxViTForImageClassification(module.config,
                                                     _do_init=False)

  def apply_fn(v, images):
    return model(jnp.transpose(images, (0, 3, 1, 2)), params=v["params"])

  x = _pixels()
  layers = list(BLOCKS) + ["classifier"]
  direct = activations.capture_pooled(module, variables, x, layers)
  via_fn = activations.capture_pooled(module, variables, x, layers,
                                      apply_fn=apply_fn)
  for layer in layers:
    np.testing.assert_allclose(via_fn[layer], direct[layer], rtol=1e-5,
                               atol=1e-6)
  assert list(activations.list_layers(module, variables, (1, 32, 32, 3),
                                      apply_fn=apply_fn)) == list(
                                          activations.list_layers(
                                              module, variables,
                                              (1, 32, 32, 3)))


def test_unknown_vit_layer_lists_nearest(tiny_vit):
  module, variables = tiny_vit
  with pytest.raises(ValueError) as e:
    activations.capture_pooled(module, variables, _pixels(1),
                               ["encoder.layer.3"])
  message = str(e.value)
  assert "'encoder.layer.3' (closest: vit.encoder.layer.3" in message


def test_save_and_load_local_dirs(tiny_vit, tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  module, variables = tiny_vit
  model = transformers.FlaxViTForImageClassification(module.config,
                                                     _do_init=False)
  model.save_pretrained(tmp_path / "cls", params=variables["params"])
  loaded_module, loaded = hf.load_vit(str(tmp_path / "cls"))
  x = _pixels()
  np.testing.assert_array_equal(
      loaded_module.apply(loaded, x).logits, module.apply(variables, x).logits)
  # A headless ViTModel directory: no "vit." prefix, a pooler.
  config = transformers.ViTConfig(**TINY_VIT, architectures=["ViTModel"])
  bare = transformers.FlaxViTModel(config, _do_init=False)
  bare.save_pretrained(tmp_path / "bare",
                       params=hf.random_params(bare, seed=0))
  bare_module, bare_vars = hf.load_vit(str(tmp_path / "bare"))
  layers = activations.list_layers(bare_module, bare_vars, (1, 32, 32, 3))
  assert "encoder.layer.3" in layers and layers["pooler"] == (1, 32)


def test_load_errors(tmp_path):
  with pytest.raises(convert.WeightsLoadError, match="does not exist"):
    hf.load_vit(str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(convert.WeightsLoadError, match="has no config.json"):
    hf.load_vit(str(tmp_path / "empty"))
  with pytest.raises(convert.WeightsLoadError,
                     match="cannot be reached.*local directory"):
    hf.load_vit("google/vit-base-patch16-224", hub_kwargs={
        "local_files_only": True, "cache_dir": str(tmp_path / "hub")})
  (tmp_path / "other").mkdir()
  with open(tmp_path / "other" / "config.json", "w", encoding="utf-8") as f:
    json.dump({"model_type": "resnet"}, f)
  (tmp_path / "other" / "model.safetensors").write_bytes(b"")
  with pytest.raises(ValueError, match="'resnet' model, not a ViT"):
    hf.load_vit(str(tmp_path / "other"))


def test_preprocessing_matches_vit_image_processor():
  import transformers  # pylint: disable=g-import-not-at-top
  # google/vit-base-patch16-224's preprocessor_config.json values.
  processor = transformers.ViTImageProcessor(
      do_resize=True, size=224, resample=2, do_normalize=True,
      image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
  for path in PHOTOS:
    image = preprocess.load_rgb(path)
    assert image.size[0] != image.size[1]  # Non-square: aspect not kept.
    want = processor(image, return_tensors="np")["pixel_values"][0]
    got = preprocess.VIT_EVAL(image)
    assert got.shape == (224, 224, 3)
    np.testing.assert_allclose(got, want.transpose(1, 2, 0), atol=1e-5)
  assert hf.vit_transform(224) == preprocess.VIT_EVAL
  # Adding resize_mode kept the cache identity of existing transforms.
  assert preprocess.TORCHVISION_IMAGENET_EVAL.identity() == repr(
      (256, 224, "bilinear", preprocess.IMAGENET_MEAN,
       preprocess.IMAGENET_STD, "round"))


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory):
  if not HAVE_TORCH:
    pytest.skip("torch is not installed (pip install -e '.[torch]'): no "
                "PyTorch reference ViT")
  work = tmp_path_factory.mktemp("vit_torch")
  with open(work / "config.json", "w", encoding="utf-8") as f:
    json.dump(TINY_VIT, f)
  np.save(work / "pixels.npy", _pixels(3, seed=5))
  env = {**os.environ, "USE_TORCH": "1", "JAX_PLATFORMS": "cpu"}
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "torch_reference", "vit.py"),
       str(work)], env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return work


def test_equivalence_with_pytorch_vit(torch_reference):
  """PyTorch model.safetensors -> Flax (no torch): block outputs to 1e-4."""
  work = torch_reference
  ref = np.load(work / "reference.npz")
  module, variables = hf.load_vit(str(work / "model"))
  x = np.load(work / "pixels.npy")
  full = activations.capture_outputs(module, variables, x,
                                     BLOCKS + ("classifier",))
  for layer, i in zip(BLOCKS, (0, 3)):
    want = ref[f"hidden_{i}"]
    np.testing.assert_allclose(full[layer], want, rtol=1e-4, atol=1e-4,
                               err_msg=layer)
  np.testing.assert_allclose(full["classifier"], ref["logits"], rtol=1e-4,
                             atol=1e-4)
  pooled = activations.capture_pooled(module, variables, x, BLOCKS,
                                      token_pool="mean")
  np.testing.assert_allclose(pooled[BLOCKS[1]], ref["hidden_3"].mean(1),
                             rtol=1e-4, atol=1e-4)


def test_clip_vision_tower(tmp_path, tiny_tokenizer_dir):
  from tests.helpers import tiny_clip as test_clip  # pylint: disable=g-import-not-at-top
  embedder = clip.ClipEmbedder.random(test_clip.TINY, seed=3,
                                      tokenizer_dir=tiny_tokenizer_dir)
  module, variables = hf.clip_vision_target(embedder)
  layers = activations.list_layers(module, variables, (1, 32, 32, 3))
  assert layers["vision_model.encoder.layers.1"] == (1, 17, 32)
  assert layers["vision_model.post_layernorm"] == (1, 32)
  assert layers["visual_projection"] == (1, 16)
  x = _pixels(2, seed=7)
  got = activations.capture_pooled(module, variables, x,
                                   ["visual_projection"])["visual_projection"]
  got = got / np.linalg.norm(got, axis=1, keepdims=True)
  np.testing.assert_allclose(got, embedder.embed_pixels(x), rtol=1e-5,
                             atol=1e-6)
  # The same tower from a saved CLIP directory, and the spec for the CLI.
  embedder.save_pretrained(tmp_path / "clip")
  loaded_module, loaded = hf.load_clip_vision(str(tmp_path / "clip"))
  np.testing.assert_allclose(loaded_module.apply(loaded, x),
                             module.apply(variables, x), rtol=1e-6)
  # A vision-only FlaxCLIPVisionModel directory: no projection.
  import transformers  # pylint: disable=g-import-not-at-top
  vision = transformers.FlaxCLIPVisionModel(embedder.config.vision_config,
                                            _do_init=False)
  vision.save_pretrained(tmp_path / "vision", params={
      "vision_model": variables["params"]["vision_model"]})
  vision_module, vision_vars = hf.load_clip_vision(str(tmp_path / "vision"))
  layers = activations.list_layers(vision_module, vision_vars, x.shape)
  assert "visual_projection" not in layers
  assert layers["vision_model.post_layernorm"] == (2, 32)
  np.testing.assert_allclose(
      vision_module.apply(vision_vars, x),
      vision(np.transpose(x, (0, 3, 1, 2)),
             params=vision_vars["params"]).pooler_output, rtol=1e-5,
      atol=1e-6)
  with pytest.raises(ValueError, match="not a CLIP model"):
    hf.load_clip_vision(_vit_dir(tmp_path))
  spec = hf.clip_vision_spec(random_config=test_clip.TINY)
  assert spec.input_size == 32 and spec.num_classes == 16
  rand_module, rand_vars = spec.load("random")
  assert rand_module.apply(rand_vars, x).shape == (2, 16)


def _vit_dir(tmp_path):
  """A saved tiny ViT directory (for wrong-model-type errors)."""
  import transformers  # pylint: disable=g-import-not-at-top
  model = transformers.FlaxViTModel(transformers.ViTConfig(**TINY_VIT),
                                    _do_init=False)
  model.save_pretrained(tmp_path / "vit", params=hf.random_params(model))
  return str(tmp_path / "vit")


@pytest.fixture(scope="module")
def tiny_tokenizer_dir(tmp_path_factory):
  import transformers  # pylint: disable=g-import-not-at-top

  from tests.helpers import tiny_clip as test_clip  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("tok")
  test_clip.write_tiny_tokenizer(out)
  transformers.CLIPTokenizerFast(
      vocab_file=str(out / "vocab.json"), merges_file=str(out / "merges.txt"),
      model_max_length=77).save_pretrained(out)
  return str(out)
