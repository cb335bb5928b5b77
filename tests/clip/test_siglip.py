"""Tests of jax_dissect.clip.siglip against transformers' PyTorch SigLIP.

Tiny random models (width 32, 2 layers) saved by transformers'
SiglipModel / Siglip2Model in a subprocess (torch_reference/siglip.py,
USE_TORCH=1), loaded here by jax_dissect.clip.siglip.load and compared: image
and text embeddings and P = cos within 1e-4 (float32), the processor's
pixels and token ids, and the one-line errors. Nothing is downloaded; the
tokenizer is a tiny SentencePiece model trained here on the 20k concepts.
"""

import glob
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from configs import shared_data
from jax_dissect import clip
from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import convert
from jax_dissect.clip.siglip import load
from jax_dissect.clip.siglip import model as model_lib
from tests import helpers
from tests.helpers import siglip as siglip_testing

REPO = helpers.REPO
HAVE_TORCH = importlib.util.find_spec("torch") is not None
PHOTOS = sorted(glob.glob(shared_data.path("imagenet_sample", "*.jpg")))[:4]
VOCAB = 400
MAX_LEN = 16
TEXTS = ["dog", "a photo of a cat", "Golden Retriever!", "SNOW, ice; frost",
         "the quick brown fox jumps over the lazy dog near the old river "
         "bank at dawn while birds sing"]


def _tower(hidden, layers=2, heads=2, mlp=37, act="gelu_pytorch_tanh",
           eps=1e-6):
  return {"hidden_size": hidden, "intermediate_size": mlp,
          "num_hidden_layers": layers, "num_attention_heads": heads,
          "hidden_act": act, "layer_norm_eps": eps}


def _text(hidden=32, **kwargs):
  return {**_tower(hidden, **kwargs), "vocab_size": VOCAB,
          "max_position_embeddings": MAX_LEN}


# name -> (model_type, config, image-processor kwargs).
VARIANTS = {
    # SigLIP's defaults: tanh GELU, bicubic, mean = std = 0.5.
    "siglip": ("siglip", {
        "vision_config": {**_tower(32), "image_size": 32, "patch_size": 8},
        "text_config": _text()}, {"size": {"height": 32, "width": 32}}),
    # Other activations, widths and eps; a text head 24 -> 48; bilinear,
    # another rescale factor, mean and std.
    "siglip_other": ("siglip", {
        "vision_config": {**_tower(48, heads=3, mlp=20, act="quick_gelu",
                                   eps=1e-5),
                          "image_size": 16, "patch_size": 4},
        "text_config": {**_text(24, layers=3, heads=4, act="gelu"),
                        "projection_size": 48}},
                     {"size": {"height": 16, "width": 16}, "resample": 2,
                      "rescale_factor": 1 / 127.5,
                      "image_mean": [0.2, 0.9, 1.1],
                      "image_std": [0.6, 0.7, 0.8]}),
    # Siglip2Model (NaFlex) at its square 4x4 grid of 8-pixel patches.
    "siglip2": ("siglip2", {
        "vision_config": {**_tower(32), "num_patches": 16, "patch_size": 8},
        "text_config": _text()}, {"patch_size": 8, "max_num_patches": 16}),
}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  import transformers  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("siglip_tok")
  siglip_testing.train_sentencepiece(out / "spm.model", VOCAB)
  tok = transformers.SiglipTokenizer(vocab_file=str(out / "spm.model"),
                                     model_max_length=MAX_LEN)
  tok.save_pretrained(out / "saved")
  return str(out / "saved")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer_dir):
  """Runs the PyTorch reference once for all VARIANTS; returns work dir."""
  if not HAVE_TORCH:
    pytest.skip("torch is not installed")
  work = tmp_path_factory.mktemp("siglip_ref")
  specs = [{"name": name, "model_type": mtype, "config": cfg, "seed": i,
            "tokenizer_dir": tokenizer_dir, "processor": proc,
            "photos": PHOTOS, "texts": TEXTS}
           for i, (name, (mtype, cfg, proc)) in enumerate(VARIANTS.items())]
  with open(work / "specs.json", "w", encoding="utf-8") as f:
    json.dump(specs, f)
  env = {**os.environ, "USE_TORCH": "1"}
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "torch_reference", "siglip.py"),
       str(work)], cwd=REPO, env=env, capture_output=True, text=True,
      timeout=600, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return work


def _cos(a, b):
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return a @ b.T


@pytest.mark.parametrize("name", list(VARIANTS))
def test_embeddings_match_pytorch(reference, name):
  """Image/text embeddings and P equal transformers' within 1e-4."""
  ref = np.load(reference / f"{name}.npz")
  siglip = load.load(str(reference / name))
  assert siglip.config.model_type == VARIANTS[name][0]
  image = siglip.image_embeds(ref["pixels"])
  text = siglip.text_embeds(ref["ids"])
  np.testing.assert_allclose(image, ref["image_emb"], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(text, ref["text_emb"], atol=1e-4, rtol=1e-4)
  p = np.asarray(model_lib.cosine(image, text))
  np.testing.assert_allclose(p, _cos(ref["image_emb"], ref["text_emb"]),
                             atol=1e-4)
  # Not vacuous: the embeddings vary across inputs and P is not constant.
  assert np.ptp(ref["image_emb"], axis=0).min() > 1e-2
  assert np.ptp(p) > 0.1


@pytest.mark.parametrize("name", list(VARIANTS))
def test_processor_path_matches_pytorch(reference, name):
  """The loader's transform and tokenization equal transformers'
  processors (same pixels within 1e-5, same ids), and the embeddings of
  real photos and texts match."""
  ref = np.load(reference / f"{name}.npz")
  siglip = load.load(str(reference / name))
  photos = [Image.open(p).convert("RGB") for p in PHOTOS]
  if name == "siglip2":  # The reference crops to a square (see there).
    photos = [img.crop((0, 0, min(img.size), min(img.size))) for img in photos]
  pixels = np.stack([siglip.transform(img) for img in photos])
  np.testing.assert_allclose(pixels, ref["proc_pixels"], atol=1e-5)
  ids = siglip.tokenize(TEXTS)
  np.testing.assert_array_equal(ids, ref["proc_ids"])
  assert ids.shape == (len(TEXTS), MAX_LEN)
  np.testing.assert_allclose(siglip.image_embeds(pixels),
                             ref["proc_image_emb"], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(siglip.text_embeds(ids), ref["proc_text_emb"],
                             atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_backbone_embedder_matches_pytorch(reference, name):
  """clip.load_backbone (describe_neurons' clip_model path) gives a
  SiglipEmbedder whose unit embeddings and P equal transformers' within
  1e-5, data parallel on 8 devices with padded batches."""
  ref = np.load(reference / f"{name}.npz")
  embedder = clip.load_backbone(str(reference / name))
  assert isinstance(embedder, clip.SiglipEmbedder)
  assert embedder.data_parallel.num_devices == 8
  image = embedder.embed_pixels(ref["pixels"], batch_size=2)
  np.testing.assert_allclose(image, _unit(ref["image_emb"]), atol=1e-5)
  text = embedder.embed_texts(TEXTS, batch_size=2)
  np.testing.assert_allclose(text, _unit(ref["proc_text_emb"]), atol=1e-5)
  np.testing.assert_allclose(
      clip.concept_activations(image, text),
      _cos(ref["image_emb"], ref["proc_text_emb"]), atol=1e-5)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_saved_checkpoint_equals_transformers_files(reference, name,
                                                    tmp_path):
  """save_pretrained writes back the state dict transformers saved (same
  keys and values, both patch-embedding layouts) and a config and
  processor that load to the same model."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  embedder = clip.load_backbone(str(reference / name))
  out = embedder.save_pretrained(tmp_path / name)
  want = load_file(str(reference / name / load.WEIGHTS))
  got = load_file(os.path.join(out, load.WEIGHTS))
  want = {k: v for k, v in want.items() if not k.endswith("position_ids")}
  assert set(got) == set(want)
  for key, value in want.items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
  again = clip.load_backbone(out)
  assert again.config == embedder.config
  assert again.transform == embedder.transform
  assert again.identity().split("@")[1] == embedder.identity().split("@")[1]


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_bfloat16_close_to_float32(reference):
  """compute_dtype=bfloat16 keeps float32 parameters and output, and its P
  stays near float32's (but is not bit-equal: it really ran in bf16)."""
  ref = np.load(reference / "siglip.npz")
  f32 = load.load(str(reference / "siglip"))
  bf16 = load.load(str(reference / "siglip"), compute_dtype="bfloat16")
  assert bf16.params["vision"]["position_embedding"].dtype == np.float32
  image, text = bf16.image_embeds(ref["pixels"]), bf16.text_embeds(ref["ids"])
  assert image.dtype == np.float32 and text.dtype == np.float32
  p16 = np.asarray(model_lib.cosine(image, text))
  p32 = np.asarray(model_lib.cosine(f32.image_embeds(ref["pixels"]),
                                    f32.text_embeds(ref["ids"])))
  assert 0 < np.abs(p16 - p32).max() < 0.05


def test_converter_rejects_unknown_key(reference):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  cfg = config_lib.read(reference / "siglip" / "config.json")
  state = load_file(str(reference / "siglip" / "model.safetensors"))
  params = convert.convert_state_dict(state, cfg)
  assert set(params) == {"vision", "text", "logit_scale", "logit_bias"}
  bad = {**state, "vision_model.extra.weight": np.zeros(3, np.float32)}
  with pytest.raises(convert.SiglipWeightsError) as err:
    convert.convert_state_dict(bad, cfg)
  message = str(err.value)
  assert "vision_model.extra.weight" in message and "\n" not in message
  # A layer beyond the config, and a misshapen weight, are errors too.
  extra = {**state, "text_model.encoder.layers.2.mlp.fc1.bias":
           np.zeros(37, np.float32)}
  with pytest.raises(convert.SiglipWeightsError, match="beyond"):
    convert.convert_state_dict(extra, cfg)
  wrong = {**state, "text_model.head.bias": np.zeros(5, np.float32)}
  with pytest.raises(convert.SiglipWeightsError, match="misshapen"):
    convert.convert_state_dict(wrong, cfg)
  del state["vision_model.post_layernorm.weight"]
  with pytest.raises(convert.SiglipWeightsError, match="1 missing"):
    convert.convert_state_dict(state, cfg)


def _copy(reference, name, tmp_path):
  out = tmp_path / name
  shutil.copytree(reference / name, out)
  return out


def test_unsupported_model_type_is_one_line(reference, tmp_path):
  out = _copy(reference, "siglip", tmp_path)
  values = json.loads((out / "config.json").read_text())
  values["model_type"] = "clip"
  (out / "config.json").write_text(json.dumps(values))
  with pytest.raises(config_lib.SiglipConfigError) as err:
    load.load(str(out))
  message = str(err.value)
  assert "'clip'" in message and "siglip, siglip2" in message
  assert "\n" not in message and len(message) <= 300


def test_missing_tokenizer_is_one_line(reference, tmp_path):
  out = _copy(reference, "siglip", tmp_path)
  os.remove(out / "spiece.model")
  with pytest.raises(load.SiglipLoadError) as err:
    load.load(str(out))
  message = str(err.value)
  assert "spiece.model" in message and "\n" not in message


def test_other_one_line_errors(reference, tmp_path):
  out = _copy(reference, "siglip", tmp_path)
  os.remove(out / "model.safetensors")
  with pytest.raises(load.SiglipLoadError, match="no model.safetensors"):
    load.load(str(out))
  with pytest.raises(load.SiglipLoadError, match="does not exist"):
    load.load(str(tmp_path / "nowhere" / "x"))
  cfg = config_lib.read(reference / "siglip" / "config.json")
  with pytest.raises(load.SiglipLoadError, match="size="):
    load.image_transform({"size": {"height": 32, "width": 48}}, cfg)
  with pytest.raises(load.SiglipLoadError, match="resample=4"):
    load.image_transform({"resample": 4}, cfg)
  with pytest.raises(config_lib.SiglipConfigError, match="hidden_act='mish'"):
    config_lib.from_dict({"model_type": "siglip",
                          "text_config": {"hidden_act": "mish"}})
  with pytest.raises(ValueError, match="pixels must be"):
    model_lib.image_embeds(
        load.load(str(reference / "siglip")).params,
        np.zeros((1, 24, 24, 3), np.float32), config=cfg)


def test_sharded_weights_load(reference, tmp_path):
  """model.safetensors.index.json and its shards give the same params."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  out = _copy(reference, "siglip", tmp_path)
  state = load_file(str(out / "model.safetensors"))
  os.remove(out / "model.safetensors")
  keys = sorted(state)
  shards = {"a.safetensors": keys[::2], "b.safetensors": keys[1::2]}
  weight_map = {}
  for shard, names in shards.items():
    save_file({k: state[k] for k in names}, str(out / shard))
    weight_map.update({k: shard for k in names})
  (out / load.WEIGHTS_INDEX).write_text(json.dumps({"weight_map": weight_map}))
  ref = np.load(reference / "siglip.npz")
  np.testing.assert_allclose(load.load(str(out)).image_embeds(ref["pixels"]),
                             ref["image_emb"], atol=1e-4, rtol=1e-4)


def test_config_defaults_follow_transformers():
  """Missing keys take SiglipConfig's defaults (B/16 at 224)."""
  cfg = config_lib.from_dict({"model_type": "siglip"})
  assert cfg.vision.image_size == 224 and cfg.vision.patch_size == 16
  assert cfg.text.max_position_embeddings == 64
  assert cfg.text.projection_size == 768 == cfg.embed_dim
  assert cfg.vision.hidden_act == "gelu_pytorch_tanh"
  cfg2 = config_lib.from_dict({"model_type": "siglip2"})
  assert cfg2.vision.image_size == 256  # 16 x 16 patches of 16.
  assert hash(cfg) != hash(cfg2)
  assert model_lib.compute_dtype_of("bfloat16") == jnp.bfloat16
  # Every activation the config accepts is implemented.
  assert set(model_lib._ACTIVATIONS) == set(config_lib.ACTIVATIONS)  # pylint: disable=protected-access
