"""describe_neurons end to end: smoke-run stage times and a projection.

1. Runs scripts/describe_neurons.py on a smoke config with an empty cache
   (a subprocess, one CPU device) and reports its stage times, then runs it
   again to time the all-from-cache path.
2. Measures the per-stage rates of the paper setting's pieces at full size
   on this machine: ResNet-50 capture of 5 layers (images/s, random weights,
   224 px photos), ViT-B/16-sized CLIP image and text embeddings (random
   weights), and soft_wpmi on N=50,000 x M=20,000 for each layer width.
3. Projects the paper setting (ResNet-50, conv1+layer1..4 = 3904 neurons,
   50,000 images, 20,000 concepts) from those rates.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(os.path.dirname(REPO), "shared", "data",
                      "imagenet_sample")
PAPER = {"images": 50000, "concepts": 20000,
         "layers": {"conv1": 64, "layer1": 256, "layer2": 512,
                    "layer3": 1024, "layer4": 2048}}

PRESETS = {
    "full": dict(smoke_config="configs/resnet50_imagenet.py:smoke",
                 resnet_images=32, clip_images=32, clip_texts=512,
                 kernel_images=50000, kernel_concepts=20000,
                 kernel_widths=(64, 256, 512, 1024, 2048), batch_size=16),
    "quick": dict(smoke_config="configs/resnet18_cifar100.py:smoke",
                  resnet_images=4, clip_images=4, clip_texts=16,
                  kernel_images=2000, kernel_concepts=500,
                  kernel_widths=(64,), batch_size=4),
}


def _smoke_run(config: str) -> Iterator[dict]:
  with tempfile.TemporaryDirectory() as tmp:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    for attempt in ("cold", "cached"):
      t0 = time.perf_counter()
      subprocess.run(
          [sys.executable, os.path.join(REPO, "scripts", "describe_neurons.py"),
           f"--config={os.path.join(REPO, config)}",
           f"--result_dir={tmp}/results", f"--activation_dir={tmp}/cache"],
          cwd=REPO, env=env, check=True, capture_output=True)
      wall = time.perf_counter() - t0
      with open(f"{tmp}/results/config.json", encoding="utf-8") as f:
        cfg = json.load(f)
      yield {"measure": "smoke_run", "config": config, "cache": attempt,
             "wall_s": wall, "stages_s": cfg["timings_s"],
             "num_images": cfg["num_images"],
             "num_concepts": cfg["num_concepts"]}


def _photos(n: int, transform) -> np.ndarray:
  from jax_dissect.data import preprocess  # pylint: disable=g-import-not-at-top
  names = sorted(os.listdir(SAMPLE))[:n]
  return np.stack([transform(preprocess.load_rgb(os.path.join(SAMPLE, x)))
                   for x in names])


def _rate(fn, n: int) -> float:
  fn()  # Compile.
  t0 = time.perf_counter()
  fn()
  return n / (time.perf_counter() - t0)


def _resnet_rate(num_images: int, batch_size: int) -> float:
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  from jax_dissect.models import capture as activations  # pylint: disable=g-import-not-at-top
  spec = models.get_model("resnet50")
  module, variables = spec.load("random")
  x = _photos(num_images, spec.transform)
  layers = list(PAPER["layers"])
  return _rate(lambda: activations.collect_activations(
      module, variables, x, layers, batch_size=batch_size), num_images)


def _clip_rates(num_images: int, num_texts: int, batch_size: int
                ) -> tuple[float, float]:
  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    bpe = os.path.join(os.path.dirname(REPO), "shared", "data", "clip_bpe",
                       "bpe_simple_vocab_16e6.txt.gz")
    clip.build_clip_tokenizer(bpe, tmp)
    # CLIPConfig's defaults are ViT-B/32; patch 16 makes it ViT-B/16.
    embedder = clip.ClipEmbedder.random(
        {"projection_dim": 512, "vision_config": {"patch_size": 16}},
        tokenizer_dir=tmp)
  x = _photos(num_images, embedder.transform)
  path = os.path.join(os.path.dirname(REPO), "shared", "data", "concepts",
                      "20k.txt")
  with open(path, encoding="utf-8") as f:
    texts = [l.strip() for l in f if l.strip()][:num_texts]
  image_rate = _rate(lambda: embedder.embed_pixels(x, batch_size=batch_size),
                     num_images)
  text_rate = _rate(lambda: embedder.embed_texts(texts, batch_size=256),
                    num_texts)
  return image_rate, text_rate


def _kernel_seconds(n: int, m: int, k: int) -> float:
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((n, k), dtype=np.float32))
  p = jnp.asarray(rng.uniform(0.1, 0.35, (n, m)).astype(np.float32))
  similarity.soft_wpmi(a, p).block_until_ready()
  t0 = time.perf_counter()
  similarity.soft_wpmi(a, p).block_until_ready()
  return time.perf_counter() - t0


def run(smoke_config, resnet_images, clip_images, clip_texts, kernel_images,
        kernel_concepts, kernel_widths, batch_size) -> Iterator[dict]:
  """Yields smoke-run records, rate records and the projection."""
  yield from _smoke_run(smoke_config)
  resnet = _resnet_rate(resnet_images, batch_size)
  yield {"measure": "rate", "stage": "activations", "what":
         "ResNet-50, 5 layers, 224 px, random weights", "per_s": resnet}
  clip_img, clip_txt = _clip_rates(clip_images, clip_texts, batch_size)
  yield {"measure": "rate", "stage": "clip_images",
         "what": "ViT-B/16-sized CLIP image tower", "per_s": clip_img}
  yield {"measure": "rate", "stage": "clip_text",
         "what": "ViT-B/16-sized CLIP text tower", "per_s": clip_txt}
  kernel = {}
  for k in kernel_widths:
    kernel[k] = _kernel_seconds(kernel_images, kernel_concepts, k)
    yield {"measure": "kernel", "fn": "soft_wpmi", "N": kernel_images,
           "M": kernel_concepts, "K": k, "seconds": kernel[k]}
  n, m = PAPER["images"], PAPER["concepts"]
  scale = (n * m) / (kernel_images * kernel_concepts)
  widths = sorted(kernel)
  sim = 0.0
  for width in PAPER["layers"].values():
    near = min(widths, key=lambda w: abs(w - width))
    sim += kernel[near] * scale * (width / near if near != width else 1.0)
  stages = {"clip_images": n / clip_img, "clip_text": m / clip_txt,
            "activations": n / resnet, "similarity": sim}
  yield {"measure": "projection", "setting": "ResNet-50, 5 layers, 50000 "
         "images, 20000 concepts, ViT-B/16 CLIP, soft_wpmi, this CPU",
         "stages_s": stages, "total_s": sum(stages.values()),
         "total_h": sum(stages.values()) / 3600}
