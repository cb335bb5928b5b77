"""Benchmark: CLIP image and text embedding throughput, JAX vs PyTorch.

Times `ClipEmbedder` (FlaxCLIPModel under jit) against transformers'
PyTorch CLIPModel holding the same random weights, in the same run: the
PyTorch side runs in a worker subprocess (_clip_torch.py, USE_TORCH=1) that
saves its weights for the Flax model to load. After a warm-up (compile)
pass, JAX and PyTorch passes alternate `repeats` times and the best time of
each is kept (the cores are shared with other work; alternating spreads
its noise over both). Also measures how storing P as
float16 / bfloat16 changes labels, on random CLIP-like embeddings.

  python scripts/benchmark.py --suite=clip --preset=full
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import tempfile
import time
from typing import Any, Iterator

import jax
import numpy as np

from benchmarks import similarity as similarity_bench
from jax_dissect import clip
from jax_dissect.data import preprocess
from jax_dissect.runtime import xla_cpu
from torch_reference import worker as worker_lib

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def shared_data_dir() -> str:
  """The shared data folder: ../shared/data beside the repository, or
  $JAX_DISSECT_SHARED_DATA (configs/shared_data.py)."""
  from configs import shared_data  # pylint: disable=g-import-not-at-top
  return shared_data.root()

# CLIPConfig defaults are ViT-B/32's vision tower with the 12-layer, width-512
# text tower; ViT-B/16 differs only in its patch size.
MODELS = {
    "vit-b16": {"vision_config": {"patch_size": 16}},
    "tiny": {"projection_dim": 16,
             "vision_config": {"hidden_size": 32, "intermediate_size": 37,
                               "num_hidden_layers": 2,
                               "num_attention_heads": 4, "image_size": 32,
                               "patch_size": 8},
             "text_config": {"hidden_size": 32, "intermediate_size": 37,
                             "num_hidden_layers": 2,
                             "num_attention_heads": 4}},
}

PRESETS = {
    "full": {"model": "vit-b16", "num_images": 64, "num_texts": 1024,
             "image_batch": 32, "text_batch": 256, "repeats": 3,
             "p_shape": (4000, 2000, 512)},
    "quick": {"model": "tiny", "num_images": 8, "num_texts": 32,
              "image_batch": 4, "text_batch": 16, "repeats": 2,
              "p_shape": (400, 300, 64)},
}


def clip_config(model: str, tokenizer) -> dict[str, Any]:
  """CLIPConfig kwargs of MODELS[model] with the tokenizer's special ids."""
  return {**MODELS[model],
          "text_config": {**MODELS[model].get("text_config", {}),
                          "bos_token_id": tokenizer.bos_token_id,
                          "eos_token_id": tokenizer.eos_token_id,
                          "pad_token_id": tokenizer.pad_token_id}}


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _inputs(num_images: int, num_texts: int, data_dir: str
            ) -> tuple[list[Any], list[str]]:
  """Real photos and concepts from the shared data, or random stand-ins."""
  photos = sorted(glob.glob(os.path.join(data_dir, "imagenet_sample",
                                         "*.jpg")))[:num_images]
  if len(photos) < num_images:
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (256, 320, 3), np.uint8)
              for _ in range(num_images)]
  concepts_file = os.path.join(data_dir, "concepts", "20k.txt")
  if os.path.isfile(concepts_file):
    with open(concepts_file, encoding="utf-8") as f:
      texts = [line.strip() for line in f if line.strip()][:num_texts]
  else:
    texts = []
  texts += [f"concept number {i}" for i in range(num_texts - len(texts))]
  return photos, texts


def _with_xla_default(embedder, attr: str, features, run_pass):
  """run_pass with embedder.<attr> swapped for a plain jax.jit(features)."""
  plain = jax.jit(features)

  def swapped():
    tuned = getattr(embedder, attr)
    setattr(embedder, attr, plain)
    try:
      return run_pass()
    finally:
      setattr(embedder, attr, tuned)
  return swapped


def _torch_worker(work: str, config: dict[str, Any], tokenizer,
                  pixels: np.ndarray, texts: list[str],
                  settings: dict) -> worker_lib.TorchWorker:
  """Starts _clip_torch.py (PyTorch CLIPModel), which saves its weights."""
  for name, obj in (("config.json", config), ("texts.json", texts),
                    ("settings.json", settings)):
    with open(os.path.join(work, name), "w", encoding="utf-8") as f:
      json.dump(obj, f)
  tokenizer.save_pretrained(os.path.join(work, "tokenizer"))
  np.save(os.path.join(work, "pixels.npy"), pixels)
  # "ready": the model is saved under work/model.
  return worker_lib.TorchWorker("torch_reference.clip_worker", work)


def _soft_wpmi_labels(a: np.ndarray, p: np.ndarray) -> np.ndarray:
  """Labels by soft_wpmi's numpy reference loop (top_k <= N)."""
  return np.argmax(similarity_bench.numpy_soft_wpmi(
      a, p.astype(np.float32), top_k=min(100, len(a))), axis=1)


def _p_storage_effect(num_images: int, num_concepts: int, num_neurons: int,
                      dim: int = 512, seed: int = 0) -> Iterator[dict]:
  """Label changes when P is stored as float16 / bfloat16 instead of f32.

  Embeddings are random unit vectors sharing one direction, so that cosine
  similarities look like CLIP's (mean ~0.2, spread ~0.04). Neurons follow
  one concept's column of P plus noise ("1 concept"), or the mean of two
  concepts' columns ("2 concepts": near-ties between the two, a harder case).
  """
  rng = np.random.default_rng(seed)
  shared = rng.normal(size=dim)
  shared /= np.linalg.norm(shared)

  def embed(n):
    x = np.sqrt(0.2) * shared + np.sqrt(0.8) * rng.normal(size=(n, dim)
                                                         ) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

  image_emb, text_emb = embed(num_images), embed(num_concepts)
  p32 = clip.concept_activations(image_emb, text_emb)
  planted = rng.integers(0, num_concepts, (2, num_neurons))
  noise = 0.01 * rng.normal(size=(num_images, num_neurons))
  acts = {"1 concept": p32[:, planted[0]] + noise,
          "2 concepts": (p32[:, planted[0]] + p32[:, planted[1]]) / 2 + noise}
  labels32 = {k: _soft_wpmi_labels(a, p32) for k, a in acts.items()}
  for dtype in ("float16", "bfloat16"):
    p = clip.concept_activations(image_emb, text_emb, dtype=dtype
                                 ).astype(np.float32)
    record = {
        "what": f"P stored as {dtype}",
        "shape": [num_images, num_concepts, num_neurons],
        "p_mean": float(p32.mean()), "p_std": float(p32.std()),
        "max_abs_error": float(np.abs(p - p32).max()),
        "image_top_concept_changed": float(
            (p.argmax(axis=1) != p32.argmax(axis=1)).mean()),
    }
    for kind, a in acts.items():
      key = kind.replace(" ", "_")
      record[f"soft_wpmi_label_changed_{key}"] = float(
          (_soft_wpmi_labels(a, p) != labels32[kind]).mean())
      hits = labels32[kind] == planted[0]
      if kind == "2 concepts":
        hits |= labels32[kind] == planted[1]
      record[f"soft_wpmi_label_planted_{key}"] = float(hits.mean())
    yield record


def run(model: str = "vit-b16", num_images: int = 64, num_texts: int = 256,
        image_batch: int = 32, text_batch: int = 256, repeats: int = 1,
        seed: int = 0,
        compare_torch: bool = True, p_shape: tuple[int, int, int] | None = None,
        data_dir: str | None = None) -> Iterator[dict]:
  """Yields one record per measurement (see the module docstring; the
  shared data from `shared_data_dir()` unless `data_dir` is given)."""
  data_dir = data_dir or shared_data_dir()
  if model not in MODELS:
    raise ValueError(f"model={model!r}; allowed: {sorted(MODELS)}")
  bpe = os.path.join(data_dir, "clip_bpe", "bpe_simple_vocab_16e6.txt.gz")
  photos, texts = _inputs(num_images, num_texts, data_dir)
  have_torch = compare_torch and importlib.util.find_spec("torch") is not None
  with tempfile.TemporaryDirectory() as work:
    tokenizer = clip.build_clip_tokenizer(bpe, os.path.join(work, "tok"))
    config = clip_config(model, tokenizer)
    # CLIPVisionConfig's default image size is 224.
    transform = clip.clip_transform(
        config.get("vision_config", {}).get("image_size", 224))
    pixels = np.stack([transform(x if isinstance(x, np.ndarray) else
                                 preprocess.load_rgb(x)) for x in photos])
    worker = None
    if have_torch:
      worker = _torch_worker(
          work, config, tokenizer, pixels, texts,
          {"seed": seed, "image_batch": image_batch, "text_batch": text_batch})
      embedder = clip.ClipEmbedder.from_pretrained(
          os.path.join(work, "model"), tokenizer=tokenizer)
    else:
      embedder = clip.ClipEmbedder.random(config, seed=seed,
                                          tokenizer=tokenizer)
    try:
      jax_pass = {
          "image": lambda: embedder.embed_pixels(pixels, image_batch),
          "text": lambda: embedder.embed_texts(texts, text_batch),
          "files": lambda: embedder.embed_images(photos, image_batch)}
      # The towers compiled with XLA's default options (YNNPACK on), as
      # before runtime/xla_cpu.forward_jit.
      jax_pass["image_xla_default"] = _with_xla_default(
          embedder, "_image_fn", embedder._image_features,  # pylint: disable=protected-access
          jax_pass["image"])
      jax_pass["text_xla_default"] = _with_xla_default(
          embedder, "_text_fn", embedder._text_features,  # pylint: disable=protected-access
          jax_pass["text"])
      jax_out, jax_warmup, jax_best, torch_best = {}, {}, {}, {}
      _, jax_warmup["image"] = _timed(
          lambda: embedder.embed_pixels(pixels[:image_batch], image_batch))
      jax_out["text"], jax_warmup["text"] = _timed(jax_pass["text"])
      for key in ("image_xla_default", "text_xla_default"):
        _timed(jax_pass[key])  # Compiles them.
      torch_warmup = worker("warmup") if worker else {}
      for _ in range(repeats):  # Alternate JAX and PyTorch passes.
        for key in ("image", "text", "files", "image_xla_default",
                    "text_xla_default"):
          out, secs = _timed(jax_pass[key])
          jax_out.setdefault(key, out)
          jax_best[key] = min(secs, jax_best.get(key, np.inf))
          if worker and key in ("image", "text"):
            secs = worker("images" if key == "image" else "text")["s"]
            torch_best[key] = min(secs, torch_best.get(key, np.inf))
      if worker:
        worker("save")
        torch_emb = dict(np.load(os.path.join(work, "torch_emb.npz")))
        torch_info = worker("info")
    finally:
      if worker:
        worker.close()
  common = {"model": model, "repeats": repeats,
            "load_avg_1min_at_end": os.getloadavg()[0],
            "weights_digest": embedder.identity().rsplit("@", 1)[1],
            "embed_dim": embedder.embed_dim, "image_size": embedder.image_size}
  for what, n, batch, key in (
      ("images (preprocessed pixels)", num_images, image_batch, "image"),
      ("texts (tokenize + encode)", num_texts, text_batch, "text")):
    record = {**common, "what": what, "n": n, "batch": batch,
              "jax_s": jax_best[key], "jax_per_s": n / jax_best[key],
              "jax_warmup_s": jax_warmup[key],
              "jax_compiler_options": xla_cpu.forward_options(),
              "jax_xla_default_s": jax_best[f"{key}_xla_default"]}
    if worker:
      record.update(
          torch_s=torch_best[key], torch_per_s=n / torch_best[key],
          torch_warmup_s=torch_warmup[f"{key}_s"],
          jax_over_torch=torch_best[key] / jax_best[key],
          max_abs_diff_vs_torch=float(
              np.abs(jax_out[key] - torch_emb[f"{key}_emb"]).max()),
          **torch_info)
    yield record
  yield {**common, "what": "images (JPEG files: decode + preprocess + "
         "encode)", "n": num_images, "batch": image_batch,
         "jax_s": jax_best["files"],
         "jax_per_s": num_images / jax_best["files"]}
  if p_shape:
    yield from _p_storage_effect(*p_shape, seed=seed)
