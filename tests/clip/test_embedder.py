"""Tests of jax_dissect.clip: tokenizers, loading, embeddings and P.

All models are tiny and random; nothing is downloaded. The PyTorch
reference runs in a subprocess (tests/clip_torch_reference.py) because this
process imports transformers with USE_TORCH=0.
"""

import glob
import importlib.util
import json
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shared_data
from jax_dissect import clip
from jax_dissect.clip import tokenizer as clip_tokenizer
from jax_dissect.data import preprocess
from tests import helpers
from tests.helpers import tiny_clip as tiny

SHARED = shared_data.root()
BPE_FILE = os.path.join(SHARED, "clip_bpe", "bpe_simple_vocab_16e6.txt.gz")
PHOTOS = sorted(glob.glob(os.path.join(SHARED, "imagenet_sample", "*.jpg")))
HAVE_TORCH = importlib.util.find_spec("torch") is not None
REPO = helpers.REPO

@pytest.fixture(scope="module")
def tiny_tokenizer(tmp_path_factory):
  import transformers  # pylint: disable=g-import-not-at-top
  out_dir = tmp_path_factory.mktemp("tiny_tok")
  tiny.write_tiny_tokenizer(out_dir)
  tok = transformers.CLIPTokenizerFast(
      vocab_file=os.path.join(out_dir, "vocab.json"),
      merges_file=os.path.join(out_dir, "merges.txt"), model_max_length=77)
  tok.save_pretrained(out_dir)
  return tok


@pytest.fixture(scope="module")
def tiny_clip(tiny_tokenizer):
  return clip.ClipEmbedder.random(tiny.TINY, seed=0, tokenizer=tiny_tokenizer)


def words(n):
  return " ".join(tiny.LETTERS[i % 26] * 2 for i in range(n))


# -- tokenizers ---------------------------------------------------------------


def test_tiny_tokenizer_offline(tiny_tokenizer):
  vocab = tiny_tokenizer.get_vocab()
  ids = tiny_tokenizer("The dog ab")["input_ids"]
  assert ids == [vocab[clip_tokenizer.START_TOKEN], vocab["the</w>"],
                 vocab["dog</w>"], vocab["a"], vocab["b</w>"],
                 vocab[clip_tokenizer.END_TOKEN]]


def test_bytes_to_unicode():
  table = clip.bytes_to_unicode()
  assert len(table) == 256 and len(set(table.values())) == 256
  assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"
  assert list(table)[:2] == [ord("!"), ord('"')]


@pytest.mark.skipif(not os.path.isfile(BPE_FILE), reason=f"no {BPE_FILE}")
def test_build_clip_tokenizer_from_real_bpe(tmp_path):
  import transformers  # pylint: disable=g-import-not-at-top
  tok = clip.build_clip_tokenizer(BPE_FILE, tmp_path)
  expected = [49406, 320, 1125, 539, 320, 1929, 49407]
  assert len(tok) == 49408
  assert tok("a photo of a dog")["input_ids"] == expected
  with open(tmp_path / "vocab.json", encoding="utf-8") as f:
    assert len(json.load(f)) == 49408
  with open(tmp_path / "merges.txt", encoding="utf-8") as f:
    assert len(f.read().strip().split("\n")) == 1 + clip_tokenizer.NUM_MERGES
  reloaded = transformers.CLIPTokenizerFast.from_pretrained(tmp_path)
  assert reloaded("a photo of a dog")["input_ids"] == expected
  assert reloaded.model_max_length == 77


def test_build_clip_tokenizer_rejects_other_files(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  bad = tmp_path / "bad.txt.gz"
  with gzip.open(bad, "wt") as f:
    f.write("header\na b\n")
  with pytest.raises(ValueError, match="not CLIP's BPE merges"):
    clip.build_clip_tokenizer(bad, tmp_path / "out")
  with pytest.raises(FileNotFoundError, match="nope.gz"):
    clip.build_clip_tokenizer(tmp_path / "nope.gz", tmp_path / "out")


# -- preprocessing ------------------------------------------------------------


@pytest.mark.parametrize("size", [224, 32])
def test_preprocessing_matches_clip_image_processor(tiny_clip, size):
  import transformers  # pylint: disable=g-import-not-at-top
  processor = transformers.CLIPImageProcessor(
      size={"shortest_edge": size}, crop_size={"height": size, "width": size})
  transform = (preprocess.CLIP_EVAL if size == 224 else tiny_clip.transform)
  assert transform == clip.clip_transform(size)
  std = np.asarray(preprocess.CLIP_STD, np.float32)
  photos = PHOTOS[::len(PHOTOS) // 20][:20]
  for path in photos:
    image = preprocess.load_rgb(path)
    ours = transform(image)
    theirs = processor(images=image, return_tensors="np")["pixel_values"][0]
    theirs = theirs.transpose(1, 2, 0)
    assert ours.shape == theirs.shape == (size, size, 3)
    diff = np.abs(ours - theirs) * std  # In [0, 1] pixel units.
    assert diff.max() <= 2 / 255, (path, diff.max())


# -- embeddings ---------------------------------------------------------------


def test_random_model_shapes_and_unit_norm(tiny_clip):
  assert (tiny_clip.embed_dim, tiny_clip.image_size, tiny_clip.max_length) == (
      16, 32, 77)
  texts = ["the dog", "a", words(5)]
  emb = tiny_clip.embed_texts(texts, batch_size=2)
  assert emb.shape == (3, 16) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-6)
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (40, 50, 3), np.uint8) for _ in range(5)]
  img = tiny_clip.embed_images(iter(images), batch_size=2)  # A generator.
  assert img.shape == (5, 16) and img.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, atol=1e-6)
  assert tiny_clip.embed_texts([]).shape == (0, 16)
  assert tiny_clip.embed_images([]).shape == (0, 16)


def test_batch_size_and_padding_do_not_change_embeddings(tiny_clip):
  texts = ["the dog", words(3), words(12), "ab", words(30)]
  one = np.concatenate([tiny_clip.embed_texts([t]) for t in texts])
  np.testing.assert_allclose(tiny_clip.embed_texts(texts, batch_size=4), one,
                             atol=1e-6)
  rng = np.random.default_rng(1)
  pixels = rng.normal(size=(5, 32, 32, 3)).astype(np.float32)
  np.testing.assert_allclose(tiny_clip.embed_pixels(pixels, batch_size=2),
                             tiny_clip.embed_pixels(pixels, batch_size=8),
                             atol=1e-6)


def test_embed_images_paths_pil_and_arrays_agree(tiny_clip):
  paths = PHOTOS[:3]
  pil = [preprocess.load_rgb(p) for p in paths]
  from_paths = tiny_clip.embed_images(paths, batch_size=2)
  np.testing.assert_allclose(tiny_clip.embed_images(pil), from_paths, atol=1e-6)
  np.testing.assert_allclose(
      tiny_clip.embed_images([np.asarray(p) for p in pil]), from_paths,
      atol=1e-6)
  pixels = np.stack([tiny_clip.transform(p) for p in pil])
  np.testing.assert_allclose(tiny_clip.embed_pixels(pixels), from_paths,
                             atol=1e-6)


def test_bad_inputs(tiny_clip, tmp_path):
  with pytest.raises(ValueError, match="file paths, PIL images or uint8"):
    tiny_clip.embed_images([3])
  with pytest.raises(ValueError, match="uint8"):
    tiny_clip.embed_images([np.zeros((8, 8, 3), np.float32)])
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not a jpeg")
  with pytest.raises(preprocess.ImageReadError, match="bad.jpg"):
    tiny_clip.embed_images([str(bad)])
  with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
    tiny_clip.embed_pixels(np.zeros((2, 16, 16, 3), np.float32))
  with pytest.raises(ValueError, match="batch_size"):
    tiny_clip.embed_texts(["a"], batch_size=0)
  with pytest.raises(ValueError, match="not one string"):
    tiny_clip.embed_texts("the dog")


def test_long_texts_are_truncated_with_warning(tiny_clip, caplog):
  long_a, long_b = words(100), "the " + words(90)
  texts = ["the dog", long_a, long_b]
  with caplog.at_level(logging.WARNING):
    emb = tiny_clip.embed_texts(texts)
  assert "2 of 3 texts are longer than CLIP's 77 tokens and were truncated" in (
      caplog.text)
  ids, truncated = tiny_clip.tokenize(texts)
  assert truncated == [1, 2]
  assert all(len(s) <= 77 for s in ids) and len(ids[1]) == 77
  assert ids[1][-1] == tiny_clip.tokenizer.eos_token_id
  # Text truncated to its first 75 words embeds as the long text does.
  np.testing.assert_allclose(
      tiny_clip.embed_texts([" ".join(long_a.split()[:75])])[0], emb[1],
      atol=1e-6)
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    tiny_clip.embed_texts(["the dog"])
  assert "truncated" not in caplog.text


def test_identity(tiny_clip, tiny_tokenizer):
  key = tiny_clip.identity()
  assert key.startswith("random-clip(seed=0)@") and key == tiny_clip.identity()
  same = clip.ClipEmbedder.random(tiny.TINY, seed=0, tokenizer=tiny_tokenizer)
  other = clip.ClipEmbedder.random(tiny.TINY, seed=1, tokenizer=tiny_tokenizer)
  assert same.identity() == key
  assert other.identity().split("@")[1] != key.split("@")[1]


def test_random_rejects_bad_config_and_missing_tokenizer(tiny_tokenizer):
  with pytest.raises(ValueError, match="unknown CLIPConfig key 'hiden_size'"):
    clip.ClipEmbedder.random({"hiden_size": 3}, tokenizer=tiny_tokenizer)
  with pytest.raises(ValueError, match="unknown vision_config key 'layers'"):
    clip.ClipEmbedder.random({"vision_config": {"layers": 3}},
                             tokenizer=tiny_tokenizer)
  with pytest.raises(ValueError, match="tokenizer"):
    clip.ClipEmbedder.random(tiny.TINY)
  with pytest.raises(ValueError, match="vocab_size"):
    clip.ClipEmbedder.random({**tiny.TINY, "text_config": {
        **tiny.TINY["text_config"], "vocab_size": 10}}, tokenizer=tiny_tokenizer)


# -- P ------------------------------------------------------------------------


def test_concept_activations():
  rng = np.random.default_rng(0)
  img = rng.normal(size=(50, 16)).astype(np.float32)
  txt = rng.normal(size=(7, 16)).astype(np.float32)
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  txt /= np.linalg.norm(txt, axis=1, keepdims=True)
  p = clip.concept_activations(img, txt, chunk_rows=16)
  assert p.shape == (50, 7) and p.dtype == np.float32
  np.testing.assert_allclose(p, img.astype(np.float64) @ txt.T.astype(
      np.float64), atol=1e-6)
  for dtype in (np.float16, "float16", jnp.bfloat16, "bfloat16"):
    low = clip.concept_activations(img, txt, dtype=dtype)
    assert low.dtype == np.dtype(dtype)
    np.testing.assert_allclose(low.astype(np.float32), p, atol=4e-3)
  with pytest.raises(ValueError, match="allowed"):
    clip.concept_activations(img, txt, dtype=np.int8)
  with pytest.raises(ValueError, match="share D"):
    clip.concept_activations(img, txt[:, :8])


# -- loading ------------------------------------------------------------------


def test_save_and_load_local_dir_offline(tiny_clip, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  tiny_clip.save_pretrained(tmp_path)
  loaded = clip.ClipEmbedder.from_pretrained(tmp_path)
  assert loaded.name == os.fspath(tmp_path)
  assert loaded.identity().split("@")[1] == tiny_clip.identity().split("@")[1]
  texts = ["the dog", words(4)]
  np.testing.assert_allclose(loaded.embed_texts(texts),
                             tiny_clip.embed_texts(texts), atol=1e-6)
  # Flax weights as safetensors.
  safe_dir = tmp_path / "safe"
  tiny_clip.model.save_pretrained(safe_dir, params=tiny_clip.params,
                                  safe_serialization=True)
  tiny_clip.tokenizer.save_pretrained(safe_dir)
  assert os.path.isfile(safe_dir / "model.safetensors")
  np.testing.assert_allclose(
      clip.ClipEmbedder.from_pretrained(safe_dir).embed_texts(texts),
      tiny_clip.embed_texts(texts), atol=1e-6)
  # A tokenizer from elsewhere (a directory).
  tok_dir = tmp_path / "tok"
  tiny_clip.tokenizer.save_pretrained(tok_dir)
  reloaded = clip.ClipEmbedder.from_pretrained(tmp_path, tokenizer=tok_dir)
  assert reloaded.tokenize(["the"])[0] == tiny_clip.tokenize(["the"])[0]


def test_local_dir_errors(tiny_clip, tmp_path):
  with pytest.raises(clip.ClipLoadError, match="does not exist"):
    clip.ClipEmbedder.from_pretrained(tmp_path / "missing" / "dir")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(clip.ClipLoadError, match="no config.json"):
    clip.ClipEmbedder.from_pretrained(empty)
  tiny_clip.config.save_pretrained(empty)
  with pytest.raises(clip.ClipLoadError, match="no single-file weights"):
    clip.ClipEmbedder.from_pretrained(empty)
  wrong = tmp_path / "wrong"
  tiny_clip.model.save_pretrained(wrong, params=tiny_clip.params)
  with open(wrong / "config.json", encoding="utf-8") as f:
    config = json.load(f)
  config["projection_dim"] = 8
  with open(wrong / "config.json", "w", encoding="utf-8") as f:
    json.dump(config, f)
  with pytest.raises(clip.ClipLoadError, match="do not fit its config"):
    clip.ClipEmbedder.from_pretrained(wrong)
  no_tok = tmp_path / "no_tok"
  tiny_clip.model.save_pretrained(no_tok, params=tiny_clip.params)
  with pytest.raises(clip.ClipLoadError, match="build_clip_tokenizer"):
    clip.ClipEmbedder.from_pretrained(no_tok)


def test_hub_id_not_in_cache_with_local_files_only(tmp_path):
  with pytest.raises(clip.ClipLoadError) as e:
    clip.ClipEmbedder.from_pretrained(
        "openai/clip-vit-base-patch32", cache_dir=tmp_path,
        local_files_only=True)
  msg = str(e.value)
  assert "cannot be reached" in msg and "local directory" in msg


def test_unreachable_hub_id_offline_env(tmp_path):
  """A fresh process with HF_HUB_OFFLINE=1 and an empty cache."""
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path),
         "JAX_PLATFORMS": "cpu"}
  code = ("from jax_dissect import clip\n"
          "try:\n"
          "  clip.ClipEmbedder.from_pretrained()\n"
          "except clip.ClipLoadError as e:\n"
          "  print('ERROR:', e)\n")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert "ERROR: cannot load the CLIP model 'openai/clip-vit-base-patch16'" in (
      out.stdout), out.stdout + out.stderr
  assert "cannot be reached" in out.stdout
  assert "local directory" in out.stdout


# -- equivalence with transformers' PyTorch CLIPModel -------------------------


@pytest.fixture(scope="module")
def torch_reference(tmp_path_factory, tiny_tokenizer):
  """Runs tests/clip_torch_reference.py; returns (work_dir, pixels, texts)."""
  if not HAVE_TORCH:
    pytest.skip("torch is not installed (pip install -e '.[torch]')")
  work = tmp_path_factory.mktemp("torch_ref")
  config = {"projection_dim": tiny.TINY["projection_dim"],
            "vision_config": tiny.TINY["vision_config"],
            "text_config": {**tiny.TINY["text_config"],
                            "vocab_size": len(tiny_tokenizer),
                            "bos_token_id": tiny_tokenizer.bos_token_id,
                            "eos_token_id": tiny_tokenizer.eos_token_id,
                            "pad_token_id": tiny_tokenizer.pad_token_id}}
  with open(work / "config.json", "w", encoding="utf-8") as f:
    json.dump(config, f)
  tiny_tokenizer.save_pretrained(work / "tokenizer")
  rng = np.random.default_rng(0)
  pixels = rng.normal(size=(6, 32, 32, 3)).astype(np.float32)
  if PHOTOS:
    transform = clip.clip_transform(32)
    pixels[:3] = [transform(preprocess.load_rgb(p)) for p in PHOTOS[:3]]
  np.save(work / "pixels.npy", pixels)
  texts = ["the dog", "a", words(6), words(20), "dog the dog", words(120)]
  with open(work / "texts.json", "w", encoding="utf-8") as f:
    json.dump(texts, f)
  env = {**os.environ, "USE_TORCH": "1"}
  out = subprocess.run(
      [sys.executable,
       os.path.join(REPO, "torch_reference", "clip_embeddings.py"),
       str(work)], env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  return work, pixels, texts


@pytest.mark.parametrize("weights", ["model_safetensors", "model_bin"])
def test_equivalence_with_pytorch_clip(torch_reference, weights):
  work, pixels, texts = torch_reference
  ref = np.load(work / "reference.npz")
  embedder = clip.ClipEmbedder.from_pretrained(work / weights)
  image_emb = embedder.embed_pixels(pixels, batch_size=4)
  text_emb = embedder.embed_texts(texts, batch_size=4)
  np.testing.assert_allclose(image_emb, ref["image_emb"], atol=1e-5)
  np.testing.assert_allclose(text_emb, ref["text_emb"], atol=1e-5)
  np.testing.assert_allclose(clip.concept_activations(image_emb, text_emb),
                             ref["p"], atol=1e-5)
  ids, _ = embedder.tokenize(texts)
  for row, seq in zip(ref["input_ids"], ids):
    assert list(row[:len(seq)]) == seq


@pytest.mark.skipif(not os.path.isfile(BPE_FILE), reason=f"no {BPE_FILE}")
def test_runs_without_torch(tmp_path):
  """In a process where `import torch` fails: build, embed, save, reload."""
  code = f"""
import sys
sys.modules["torch"] = None  # Any `import torch` now raises ImportError.
import numpy as np
from jax_dissect import clip
from tests import helpers
from tests.helpers import tiny_clip as tiny
tok = clip.build_clip_tokenizer({BPE_FILE!r}, {str(tmp_path / "tok")!r})
model = clip.ClipEmbedder.random({tiny.TINY!r}, tokenizer=tok)
text = model.embed_texts(["a photo of a dog", "cat"])
image = model.embed_pixels(np.zeros((2, 32, 32, 3), np.float32))
model.save_pretrained({str(tmp_path / "model")!r})
again = clip.ClipEmbedder.from_pretrained({str(tmp_path / "model")!r})
assert np.allclose(again.embed_texts(["a photo of a dog", "cat"]), text)
print("OK", clip.concept_activations(image, text).shape)
"""
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  env.pop("USE_TORCH", None)
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
  assert "OK (2, 2)" in out.stdout, out.stdout + out.stderr[-3000:]


def test_clip_text_embedder_of_the_analyses(tiny_clip, tmp_path):
  """text_embed.clip_text_embedder loads a saved model and matches it."""
  from jax_dissect.clip import text_embed  # pylint: disable=g-import-not-at-top
  tiny_clip.save_pretrained(tmp_path / "clip")
  embed = text_embed.clip_text_embedder(str(tmp_path / "clip"),
                                        local_files_only=True)
  texts = ["ab cd", "ef", "ab cd"]
  np.testing.assert_allclose(embed(texts), tiny_clip.embed_texts(texts),
                             atol=1e-6)


# -- devices and precision ----------------------------------------------------


def test_embeddings_on_8_devices_equal_one_device(tiny_tokenizer):
  """Bit for bit: one batch per device, texts grouped by length bucket."""
  one = clip.ClipEmbedder.random(tiny.TINY, seed=0, tokenizer=tiny_tokenizer,
                                 devices=1)
  assert one.identity() == clip.ClipEmbedder.random(
      tiny.TINY, seed=0, tokenizer=tiny_tokenizer, devices="auto").identity()
  pixels = np.random.default_rng(2).normal(size=(23, 32, 32, 3)).astype(
      np.float32)
  # Lengths in three buckets (<= 16, 32, 48 tokens), so calls change shape.
  texts = ["the dog", words(2), "ab", "dog", "z", words(20), words(21),
           "do", words(40), "the", words(25), words(3)] * 2
  want_pixels = one.embed_pixels(pixels, batch_size=5)
  want_texts = one.embed_texts(texts, batch_size=3)
  for devices in ("auto", 3):
    every = clip.ClipEmbedder.random(tiny.TINY, seed=0, tokenizer=tiny_tokenizer,
                                     devices=devices)
    assert every.data_parallel.num_devices == (8 if devices == "auto" else 3)
    np.testing.assert_array_equal(every.embed_pixels(pixels, batch_size=5),
                                  want_pixels)
    np.testing.assert_array_equal(every.embed_texts(texts, batch_size=3),
                                  want_texts)


def test_text_shares_sum_to_the_whole(tiny_clip):
  texts = ["the dog", words(2), "ab", "dog", "z", "do", "the"]
  whole = tiny_clip.embed_texts(texts, batch_size=2)
  shares = [tiny_clip.embed_texts(texts, batch_size=2, share=(i, 3))
            for i in range(3)]
  for share in shares:
    assert 0 < np.count_nonzero(np.abs(share).sum(axis=1)) < len(texts)
  np.testing.assert_array_equal(sum(shares), whole)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_embeddings(tiny_tokenizer, tiny_clip, dtype):
  half = clip.ClipEmbedder.random(tiny.TINY, seed=0, tokenizer=tiny_tokenizer,
                                  compute_dtype=dtype)
  assert half.identity() != tiny_clip.identity()  # The cache key changes.
  leaves = jax.tree_util.tree_leaves(half.params)
  assert {str(x.dtype) for x in leaves} == {dtype}
  pixels = np.random.default_rng(2).normal(size=(4, 32, 32, 3)).astype(
      np.float32)
  got = half.embed_pixels(pixels)
  want = tiny_clip.embed_pixels(pixels)
  assert got.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
  assert 1e-6 < np.abs(got - want).max() < 0.05
  texts = ["the dog", words(3)]
  assert np.abs(half.embed_texts(texts) - tiny_clip.embed_texts(texts)
                ).max() < 0.05
