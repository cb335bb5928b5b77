"""ResNet-50 activation capture: jax_dissect vs torchvision forward hooks.

Both frameworks run the same random weights (torchvision's init with
randomized BatchNorm, converted to Flax) on the same preprocessed photos of
the shared ImageNet sample (random pixels if it is absent), capture the
outputs of conv1 and layer1..layer4 and average-pool them over space. Timed
passes alternate between the frameworks so load changes hit both; the
reported rates use the median pass and the fastest pass (on a shared,
busy machine the fastest pass is the least disturbed). Preprocessing is not
timed.

Preset `bf16` runs both in bfloat16: jax_dissect with compute_dtype=
bfloat16 (runtime.precision: the module's dtype and its cast parameters),
PyTorch under torch.autocast("cpu", dtype=torch.bfloat16), which uses
oneDNN's bfloat16 kernels on CPUs with AVX512_BF16 or AMX (the records
name the CPU's flags). Their pooled outputs are compared with each other
and with jax_dissect's float32 ones.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from typing import Iterator

import jax
import numpy as np

from configs import shared_data
from jax_dissect.data import preprocess
from jax_dissect.models import capture as activations
from jax_dissect.models import convert
from jax_dissect.models import resnet
from jax_dissect.runtime import precision
from jax_dissect.runtime import xla_cpu

LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
# The shared ImageNet sample (configs/shared_data.py finds it).
SAMPLE_DIR = os.path.join(shared_data.root(), "imagenet_sample")

PRESETS = {
    "full": dict(num_images=48, batch_size=16, image_size=224, repeats=5),
    "quick": dict(num_images=8, batch_size=4, image_size=224, repeats=1),
    "bf16": dict(num_images=48, batch_size=16, image_size=224, repeats=5,
                 dtype="bfloat16"),
}


def _images(num_images: int, image_size: int) -> tuple[np.ndarray, str]:
  """(N, S, S, 3) float32 preprocessed photos, and where they came from."""
  transform = preprocess.ImageTransform(
      resize=round(image_size * 256 / 224), crop=image_size)
  if os.path.isdir(SAMPLE_DIR):
    names = sorted(os.listdir(SAMPLE_DIR))[:num_images]
    if len(names) == num_images:
      return np.stack([transform(preprocess.load_rgb(
          os.path.join(SAMPLE_DIR, n))) for n in names]), "imagenet_sample"
  rng = np.random.default_rng(0)
  return rng.normal(size=(num_images, image_size, image_size, 3)).astype(
      np.float32), "random"


def _torch_resnet50(torch):
  import torchvision  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  model = torchvision.models.resnet50(weights=None).eval()
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.normal_(0.0, 0.1)
        m.running_var.uniform_(0.5, 1.5)
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
  return model


def _max_rel_diff(x: dict, y: dict) -> float:
  """Largest |x - y| over the largest |y|, the worst of LAYERS."""
  return max(float(np.abs(x[l] - y[l]).max() / np.abs(y[l]).max())
             for l in LAYERS)


def run(num_images: int, batch_size: int, image_size: int,
        repeats: int, dtype: str = "float32") -> Iterator[dict]:
  """Yields one record per framework and one comparing them."""
  import torch  # pylint: disable=g-import-not-at-top
  precision.check(dtype)
  threads = os.cpu_count() or 1
  torch.set_num_threads(threads)
  images, source = _images(num_images, image_size)
  batches = [images[i:i + batch_size]
             for i in range(0, num_images, batch_size)]

  torch_model = _torch_resnet50(torch)
  module = resnet.ResNet50()
  variables = jax.device_put(convert.convert_state_dict(
      {k: v.numpy() for k, v in torch_model.state_dict().items()},
      convert.abstract_variables(module, (1, image_size, image_size, 3))))
  reference = None
  if dtype != precision.DEFAULT:
    reference = {l: np.concatenate([np.asarray(activations.capture_pooled(
        module, variables, b, LAYERS)[l]) for b in batches]) for l in LAYERS}
    module = precision.with_dtype(module, dtype)
    variables = precision.cast_floating(variables, dtype)

  def jax_pass(capture=activations.capture_pooled):
    out = [capture(module, variables, b, LAYERS) for b in batches]
    jax.block_until_ready(out)
    return {l: np.concatenate([np.asarray(o[l], np.float32) for o in out])
            for l in LAYERS}

  # The same capture compiled with XLA's default options (an outer jit's
  # options hold for the programs inlined into it): YNNPACK on, as before
  # runtime/xla_cpu.forward_jit.
  xla_default = jax.jit(activations.capture_pooled, static_argnums=(0, 3))

  def jax_xla_default_pass():
    return jax_pass(xla_default)

  pooled = {}
  modules = dict(torch_model.named_modules())
  for name in LAYERS:
    def hook(_, __, out, name=name):
      pooled[name] = out.mean(dim=(2, 3))
    modules[name].register_forward_hook(hook)
  torch_batches = [torch.from_numpy(np.ascontiguousarray(
      b.transpose(0, 3, 1, 2))) for b in batches]

  def torch_pass():
    out = {l: [] for l in LAYERS}
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16)
                if dtype == "bfloat16" else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
      for b in torch_batches:
        torch_model(b)
        for l in LAYERS:
          out[l].append(pooled[l].float().numpy())
    return {l: np.concatenate(v) for l, v in out.items()}

  start = time.perf_counter()
  jax.block_until_ready(
      activations.capture_pooled(module, variables, batches[0], LAYERS))
  compile_s = time.perf_counter() - start
  torch_pass()  # Warm-up (allocator, oneDNN primitive caches).
  jax_xla_default_pass()  # Compiles it.

  passes = (("jax", jax_pass), ("torch", torch_pass),
            ("jax_xla_default", jax_xla_default_pass))
  seconds = {name: [] for name, _ in passes}
  results = {}
  for _ in range(repeats):
    for name, fn in passes:
      start = time.perf_counter()
      results[name] = fn()
      seconds[name].append(time.perf_counter() - start)

  common = dict(model="resnet50", weights="random", layers=list(LAYERS),
                pool="avg", image_size=image_size, batch_size=batch_size,
                num_images=num_images, images=source, repeats=repeats,
                dtype=dtype)
  rates, best_rates = {}, {}
  for name, _ in passes:
    rates[name] = num_images / statistics.median(seconds[name])
    best_rates[name] = num_images / min(seconds[name])
    record = dict(common, framework=name, seconds=seconds[name],
                  images_per_s=rates[name], best_images_per_s=best_rates[name])
    if name == "jax":
      record.update(jax_version=jax.__version__, first_call_s=compile_s,
                    backend=jax.default_backend(),
                    compiler_options=xla_cpu.forward_options())
    elif name == "jax_xla_default":
      record.update(compiler_options=None,
                    method="capture_pooled under a plain jax.jit: XLA's "
                    "default kernels (YNNPACK on)")
    else:
      record.update(torch_version=torch.__version__, torch_threads=threads,
                    method="forward hooks, mean over H, W in the hook" + (
                        ", torch.autocast bfloat16" if dtype == "bfloat16"
                        else ""))
    if reference is not None:
      record["max_rel_diff_vs_jax_float32"] = _max_rel_diff(
          results[name], reference)
    yield record
  max_rel = _max_rel_diff(results["jax"], results["torch"])
  yield dict(common, framework="ratio",
             jax_over_torch=rates["jax"] / rates["torch"],
             best_jax_over_torch=best_rates["jax"] / best_rates["torch"],
             jax_images_per_s=rates["jax"], torch_images_per_s=rates["torch"],
             xla_default_over_torch=rates["jax_xla_default"] / rates["torch"],
             best_xla_default_over_torch=(best_rates["jax_xla_default"] /
                                          best_rates["torch"]),
             max_rel_diff_pooled=max_rel)
