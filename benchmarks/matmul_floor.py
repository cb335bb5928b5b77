"""The CPU's float32 matrix-product rate: the floor of the forward passes.

Times one product per shape, best of `repeats` after a warm-up, with
XLA's default kernels (YNNPACK on), with the options of jax_dissect's
forward passes (runtime/xla_cpu.forward_jit), with PyTorch (its own
threads: as many as CPUs) and with numpy's BLAS, alternating. The shapes
are a ViT-B/16's at 32 images per call (6304 token rows) and a square
4096^3 product.

  python scripts/benchmark.py --suite=matmul_floor --preset=full
"""

from __future__ import annotations

import importlib.util
import os
from typing import Iterator

import jax
import numpy as np

from benchmarks import similarity as similarity_bench
from jax_dissect.runtime import xla_cpu

PRESETS = {
    "full": dict(shapes=[(6304, 768, 3072), (6304, 3072, 768),
                         (6304, 768, 768), (4096, 4096, 4096)], repeats=5),
    "quick": dict(shapes=[(64, 32, 48)], repeats=2),
}


def run(shapes, repeats: int) -> Iterator[dict]:
  """One record per (m, k, n): seconds and GFLOP/s of each library."""
  rng = np.random.default_rng(0)
  have_torch = importlib.util.find_spec("torch") is not None
  if have_torch:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(os.cpu_count() or 1)
  for m, k, n in shapes:
    a = rng.normal(size=(m, k)).astype(np.float32)
    b = rng.normal(size=(k, n)).astype(np.float32)
    a_dev, b_dev = jax.device_put(a), jax.device_put(b)
    default = jax.jit(lambda x, y: x @ y)
    forward = xla_cpu.forward_jit(lambda x, y: x @ y)
    fns = {
        "xla_default": lambda: default(a_dev, b_dev).block_until_ready(),
        "xla_forward_options": lambda: forward(a_dev, b_dev
                                               ).block_until_ready(),
        "numpy": lambda: a @ b}
    if have_torch:
      a_t, b_t = torch.from_numpy(a), torch.from_numpy(b)
      fns["torch"] = lambda: a_t @ b_t
    seconds = {name: [] for name in fns}
    for _ in range(2):  # Alternate the libraries twice.
      for name, fn in fns.items():
        seconds[name].append(similarity_bench._best_of(fn, repeats))  # pylint: disable=protected-access
    flop = 2.0 * m * k * n
    best = {name: min(v) for name, v in seconds.items()}
    yield {"m": m, "k": k, "n": n, "repeats": repeats,
           "forward_options": xla_cpu.forward_options(),
           "seconds": best,
           "gflop_per_s": {name: flop / s / 1e9 for name, s in best.items()}}
