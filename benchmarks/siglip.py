"""Timing SigLIP's Flax image tower beside CLIP's and PyTorch SigLIP's.

`run` times, on one batch of random pixels:

- "siglip_flax": jax_dissect.clip.siglip's image tower (SigLIP B/16 at 224 by
  default: width 768, 12 layers, 12 heads, patch 16), with the weights of
  the PyTorch model below when torch is there (so their outputs are
  compared: "max_abs_diff"), else Flax-initialised;
- "clip_flax": transformers' FlaxCLIPVisionModel of the same size (random
  weights), the image tower jax_dissect.clip uses;
- "siglip_torch": transformers' PyTorch SiglipVisionModel (random, seeded),
  run in a child process with USE_TORCH=1 (jax_dissect imports
  transformers with USE_TORCH=0), on CUDA if it has one.

Each is compiled / warmed up once, then timed `repeats` times; the result
is the median seconds per batch and images per second. Run it where the
cores or the accelerator are not shared; a tiny size checks that it works:

  python -m benchmarks.siglip --batch_size=2 --repeats=1 --tiny
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import convert
from jax_dissect.clip.siglip import load
from jax_dissect.clip.siglip import model as model_lib

# A tiny tower for checking that the benchmark runs.
TINY = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
        "num_attention_heads": 2, "image_size": 32, "patch_size": 8}
_TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16",
                 "float16": "float16"}


def vision_config(overrides: Mapping[str, Any] | None = None
                  ) -> config_lib.SiglipConfig:
  """SigLIP B/16 (SiglipVisionConfig's defaults) with `overrides`."""
  vision = config_lib.VisionConfig(**dict(overrides or {}))
  text = config_lib.TextConfig(projection_size=vision.hidden_size)
  return config_lib.SiglipConfig(vision=vision, text=text)


def _median_time(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return {"first_s": first, "median_s": statistics.median(times)}


def _torch_side(work_dir: str, overrides: Mapping[str, Any], seed: int,
                repeats: int, compute_dtype: str) -> dict[str, Any]:
  settings = {"overrides": dict(overrides), "seed": seed, "repeats": repeats,
              "dtype": _TORCH_DTYPES[compute_dtype]}
  with open(os.path.join(work_dir, "settings.json"), "w",
            encoding="utf-8") as f:
    json.dump(settings, f)
  env = {**os.environ, "USE_TORCH": "1"}
  out = subprocess.run(
      [sys.executable, "-m", "benchmarks.siglip", "--torch_worker",
       work_dir], env=env, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError("the PyTorch SigLIP worker failed: " +
                       out.stderr.strip().splitlines()[-1][:300])
  return json.loads(out.stdout.strip().splitlines()[-1])


def _torch_worker(work_dir: str) -> None:
  """Child process: times SiglipVisionModel, saves weights and outputs."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  with open(os.path.join(work_dir, "settings.json"), encoding="utf-8") as f:
    settings = json.load(f)
  config = transformers.SiglipVisionConfig(**settings["overrides"])
  config._attn_implementation = "sdpa"  # pylint: disable=protected-access
  torch.manual_seed(settings["seed"])
  model = transformers.SiglipVisionModel(config).eval()
  model.save_pretrained(os.path.join(work_dir, "torch_model"),
                        safe_serialization=True)
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = model.to(device=device, dtype=getattr(torch, settings["dtype"]))
  pixels = torch.from_numpy(
      np.load(os.path.join(work_dir, "pixels.npy")).transpose(0, 3, 1, 2))
  pixels = pixels.to(device=device, dtype=getattr(torch, settings["dtype"]))

  @torch.no_grad()
  def forward():
    out = model(pixel_values=pixels).pooler_output
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  timing = _median_time(forward, settings["repeats"])
  np.save(os.path.join(work_dir, "torch_out.npy"),
          forward().float().cpu().numpy())
  print(json.dumps({**timing, "device": device,
                    "torch_version": torch.__version__,
                    "threads": torch.get_num_threads()}))


def run(batch_size: int = 32, repeats: int = 5,
        overrides: Mapping[str, Any] | None = None,
        compute_dtype: str = "float32", with_torch: bool = True,
        seed: int = 0) -> dict[str, Any]:
  """Times the three image towers on one batch; see the module docstring.

  Args:
    batch_size: images per batch.
    repeats: timed runs after the first (compiling) one.
    overrides: SiglipVisionConfig / CLIPVisionConfig keys shared by all
      three (hidden_size, intermediate_size, num_hidden_layers,
      num_attention_heads, image_size, patch_size); default B/16 at 224.
    compute_dtype: "float32", "bfloat16" or "float16" for all three.
    with_torch: also time PyTorch (needs torch).
    seed: of the pixels and weights.

  Returns:
    {"batch_size", "compute_dtype", "config", "jax_backend", and per tower
    {"first_s", "median_s", "images_per_s"}; "siglip_torch" also has its
    device; "max_abs_diff" between the SigLIP towers when both ran}.
  """
  dtype = model_lib.compute_dtype_of(compute_dtype)
  overrides = dict(overrides or {})
  cfg = vision_config(overrides)
  v = cfg.vision
  rng = np.random.default_rng(seed)
  pixels = rng.normal(size=(batch_size, v.image_size, v.image_size,
                            v.num_channels)).astype(np.float32)
  result: dict[str, Any] = {
      "batch_size": batch_size, "compute_dtype": compute_dtype,
      "config": {k: getattr(v, k) for k in TINY},
      "jax_backend": jax.default_backend()}
  with tempfile.TemporaryDirectory(prefix="siglip_bench-") as work:
    np.save(os.path.join(work, "pixels.npy"), pixels)
    params = None
    if with_torch:
      result["siglip_torch"] = _torch_side(work, overrides, seed, repeats,
                                           compute_dtype)
      state = load.read_safetensors(
          [os.path.join(work, "torch_model", load.WEIGHTS)])
      params = convert.convert_state_dict(state, cfg)
      torch_out = np.load(os.path.join(work, "torch_out.npy"))
  if params is None:
    params = {"vision": jax.jit(model_lib.VisionTower(v).init)(
        jax.random.key(seed), pixels[:1])["params"]}
  params = jax.device_put(params)
  x = jax.device_put(pixels)

  def siglip():
    return model_lib.image_embeds(params, x, config=cfg,
                                  compute_dtype=compute_dtype)

  result["siglip_flax"] = _median_time(siglip, repeats)
  if with_torch:
    result["max_abs_diff"] = float(np.abs(np.asarray(siglip()) -
                                          torch_out).max())

  from jax_dissect.runtime import hub as hf_loading  # pylint: disable=g-import-not-at-top
  tf = hf_loading.transformers_lib()
  clip_config = tf.CLIPVisionConfig(**overrides)
  clip = tf.FlaxCLIPVisionModel(clip_config, dtype=dtype, _do_init=False)
  clip_params = jax.device_put(
      hf_loading.random_params(clip.params_shape_tree, seed))
  x_nchw = jax.device_put(pixels.transpose(0, 3, 1, 2))
  clip_fn = jax.jit(lambda p, x: clip(x, params=p).pooler_output)
  result["clip_flax"] = _median_time(lambda: clip_fn(clip_params, x_nchw),
                                     repeats)
  for name in ("siglip_flax", "clip_flax", "siglip_torch"):
    if name in result:
      result[name]["images_per_s"] = batch_size / result[name]["median_s"]
  return result


def main(argv: list[str]) -> None:
  if len(argv) == 3 and argv[1] == "--torch_worker":
    _torch_worker(argv[2])
    return
  kwargs: dict[str, Any] = {}
  for arg in argv[1:]:
    key, _, value = arg.lstrip("-").partition("=")
    if key == "tiny":
      kwargs["overrides"] = TINY
    elif key in ("batch_size", "repeats", "seed"):
      kwargs[key] = int(value)
    elif key == "compute_dtype":
      kwargs[key] = value
    elif key == "no_torch":
      kwargs["with_torch"] = False
    else:
      raise SystemExit(
          f"unknown argument {arg!r}; allowed: --batch_size=N --repeats=N "
          "--seed=N --compute_dtype=float32|bfloat16|float16 --tiny "
          "--no_torch")
  print(json.dumps(run(**kwargs), indent=1))


if __name__ == "__main__":
  main(sys.argv)
