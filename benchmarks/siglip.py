"""Benchmark: SigLIP's Flax image tower beside CLIP's and PyTorch SigLIP's.

  python scripts/benchmark.py --suite=siglip --preset=b16
  python scripts/benchmark.py --suite=siglip --preset=tiny   # does it run

On one batch of random pixels (random weights, the same batch and machine
for all three), each preset times:

- "siglip_flax": jax_dissect.clip.siglip's image tower (SigLIP B/16 at 224:
  width 768, 12 layers, 12 heads, patch 16), jitted as the embedders do
  (runtime/xla_cpu.forward_jit), holding the weights of
  the PyTorch model below (their pooled outputs are compared:
  "max_abs_diff_vs_torch");
- "clip_flax": transformers' FlaxCLIPVisionModel of the same size (CLIP
  ViT-B/16's tower; pooled output, before CLIP's projection), the image
  tower of jax_dissect.clip's ClipEmbedder;
- "siglip_torch": transformers' PyTorch SiglipVisionModel (sdpa attention)
  in a worker process (torch_reference/siglip_worker.py, USE_TORCH=1), on
  the device JAX uses when that is a GPU PyTorch sees, else on the CPU.

After one compiling / warm-up pass of each, the three alternate `repeats`
times (the cores may be shared; alternating spreads the noise over all
three) and the best pass of each is kept. One record per tower:
seconds per batch, images per second, and the first pass's seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from typing import Any, Iterator, Mapping

import jax
import numpy as np

from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import convert
from jax_dissect.clip.siglip import load
from jax_dissect.clip.siglip import model as model_lib
from jax_dissect.runtime import hub
from jax_dissect.runtime import precision
from jax_dissect.runtime import xla_cpu
from torch_reference import worker as worker_lib

# Tower settings shared by SiglipVisionConfig and CLIPVisionConfig.
MODELS = {
    # SiglipVisionConfig's defaults: SigLIP B/16 at 224 (and CLIP ViT-B/16).
    "b16": {"hidden_size": 768, "intermediate_size": 3072,
            "num_hidden_layers": 12, "num_attention_heads": 12,
            "image_size": 224, "patch_size": 16},
    "tiny": {"hidden_size": 32, "intermediate_size": 37,
             "num_hidden_layers": 2, "num_attention_heads": 2,
             "image_size": 32, "patch_size": 8},
}

PRESETS = {
    "b16": {"model": "b16", "batch_size": 32, "repeats": 5},
    "b16_bf16": {"model": "b16", "batch_size": 32, "repeats": 5,
                 "compute_dtype": "bfloat16"},
    "tiny": {"model": "tiny", "batch_size": 2, "repeats": 1},
}


def vision_config(overrides: Mapping[str, Any]) -> config_lib.SiglipConfig:
  """A SigLIP config whose image tower has `overrides`."""
  vision = config_lib.VisionConfig(**dict(overrides))
  text = config_lib.TextConfig(projection_size=vision.hidden_size)
  return config_lib.SiglipConfig(vision=vision, text=text)


def _timed(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _torch_device() -> str:
  """cuda when JAX runs on a GPU and PyTorch sees one, else cpu."""
  if jax.default_backend() != "gpu":
    return "cpu"
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  probe = subprocess.run(
      [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
      capture_output=True, text=True, check=False,
      env={**os.environ, "USE_TORCH": "1"})
  return "cuda" if probe.stdout.strip() == "True" else "cpu"


def run(model: str = "b16", batch_size: int = 32, repeats: int = 5,
        compute_dtype: str = "float32", compare_torch: bool = True,
        seed: int = 0) -> Iterator[dict[str, Any]]:
  """Yields one record per image tower (see the module docstring).

  Args:
    model: a key of MODELS.
    batch_size: images per pass.
    repeats: timed passes of each tower after the warm-up.
    compute_dtype: "float32", "bfloat16" or "float16" for all three.
    compare_torch: also time PyTorch SigLIP (needs torch); without it the
      Flax SigLIP gets Flax-initialised weights.
    seed: of the pixels and weights.
  """
  if model not in MODELS:
    raise ValueError(f"model={model!r}; allowed: {sorted(MODELS)}")
  precision.check(compute_dtype)
  overrides = MODELS[model]
  cfg = vision_config(overrides)
  v = cfg.vision
  pixels = np.random.default_rng(seed).normal(
      size=(batch_size, v.image_size, v.image_size, v.num_channels)
  ).astype(np.float32)
  have_torch = compare_torch and importlib.util.find_spec("torch")
  common = {"model": model, "batch_size": batch_size,
            "compute_dtype": compute_dtype, "repeats": repeats,
            "config": dict(overrides), "jax_backend": jax.default_backend(),
            "jax_device": str(jax.devices()[0])}
  with tempfile.TemporaryDirectory(prefix="siglip_bench-") as work:
    worker = None
    if have_torch:
      np.save(os.path.join(work, "pixels.npy"), pixels)
      device = _torch_device()
      with open(os.path.join(work, "settings.json"), "w",
                encoding="utf-8") as f:
        json.dump({"overrides": overrides, "seed": seed,
                   "dtype": compute_dtype, "device": device}, f)
      worker = worker_lib.TorchWorker("torch_reference.siglip_worker", work)
      state = load.read_safetensors(
          [os.path.join(work, "torch_model", load.WEIGHTS)])
      params = {"vision": convert.convert_state_dict(state, cfg)["vision"]}
    else:
      params = {"vision": jax.jit(model_lib.VisionTower(v).init)(
          jax.random.key(seed), pixels[:1])["params"]}
    try:
      params = jax.device_put(params)
      x = jax.device_put(pixels)

      # Both Flax towers compiled as the embedders compile them
      # (runtime/xla_cpu.forward_jit: XLA's own CPU kernels).
      siglip_fn = xla_cpu.forward_jit(
          lambda p, x: model_lib.image_embeds(p, x, config=cfg,
                                              compute_dtype=compute_dtype))

      def siglip():
        return siglip_fn(params, x)

      tf = hub.transformers_lib()
      clip = tf.FlaxCLIPVisionModel(
          tf.CLIPVisionConfig(**overrides),
          dtype=precision.dtype(compute_dtype), _do_init=False)
      clip_params = jax.device_put(precision.cast_floating(
          hub.random_params(clip.params_shape_tree, seed), compute_dtype))
      x_nchw = jax.device_put(pixels.transpose(0, 3, 1, 2))
      clip_fn = xla_cpu.forward_jit(
          lambda p, x: clip(x, params=p).pooler_output)
      passes = {"siglip_flax": siglip,
                "clip_flax": lambda: clip_fn(clip_params, x_nchw)}
      first = {name: _timed(fn) for name, fn in passes.items()}
      if worker:
        first["siglip_torch"] = worker("warmup")["s"]
      best = {name: np.inf for name in first}
      for _ in range(repeats):  # Alternate the three.
        for name, fn in passes.items():
          best[name] = min(best[name], _timed(fn))
        if worker:
          best["siglip_torch"] = min(best["siglip_torch"],
                                     worker("time")["s"])
      extra: dict[str, dict[str, Any]] = {name: {} for name in first}
      if worker:
        worker("save")
        torch_out = np.load(os.path.join(work, "torch_out.npy"))
        extra["siglip_torch"] = worker("info")
        extra["siglip_flax"]["max_abs_diff_vs_torch"] = float(
            np.abs(np.asarray(siglip(), np.float32) - torch_out).max())
    finally:
      if worker:
        worker.close()
  for name in first:
    yield {**common, "what": f"{name} image tower", "tower": name,
           "first_s": first[name], "best_s": best[name],
           "images_per_s": batch_size / best[name],
           **({"compiler_options": xla_cpu.forward_options()}
              if name.endswith("_flax") else {}),
           **extra[name]}
