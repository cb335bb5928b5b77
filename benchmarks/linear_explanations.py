"""Linear explanations of a whole layer against a Python loop over neurons.

Each case runs in a fresh spawned process (its own peak RSS). Data: P =
0.25 + a rank-16 image x concept part + independent noise (float32, made in
blocks), and K planted neurons, neuron k = C[:, S_k] @ w_k (1 to 5 concepts,
|w| in [0.6, 1.4], random signs), scaled to unit variance, + 0.5 * standard
normal noise, with C = sigmoid(58 (P - 0.25)).

In the process, in this order:
- `batched`: linear_explanations.linear_explanations(A, P) with the defaults,
  one cold call (compilation, the presence build and the split included):
  wall_s;
- `prepare_s`: the presence build alone (prepare + standardize), warm;
- `loop`: the same per-chunk code (linear_explanations.explain_chunk) called
  for one neuron at a time in a Python loop on the prepared design: one
  neuron to compile (not timed), then `loop_neurons` neurons timed; the
  per-neuron time is scaled to K (loop_s_scaled = per neuron x K).
speedup = loop_s_scaled / (wall_s - prepare_s): the search alone, the
batched side with its compilation; speedup_end_to_end = (prepare_s +
loop_s_scaled) / wall_s.

Records: {"N", "K", "M", "chunk_size", "wall_s", "prepare_s",
"loop_neurons", "loop_s_per_neuron", "loop_s_scaled", "speedup",
"speedup_end_to_end", "precision", "recall" (planted concepts),
"mean_correlation", "mean_length", "peak_rss_mb" (the process: data,
batched run and loop), "loadavg_before", "loadavg_after"}.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Iterator

import numpy as np

from benchmarks import similarity as similarity_bench

PRESETS = {
    "full": {"sizes": [(10000, 2048, 20000)], "loop_neurons": 8},
    "quick": {"sizes": [(1000, 64, 500)], "loop_neurons": 4},
}
_BLOCK = 2048


def make_layer(n: int, k: int, m: int, seed: int = 0, noise: float = 0.5):
  """(A (n, k), P (n, m), planted concept sets) as the module doc says."""
  rng = np.random.default_rng(seed)
  emb = rng.standard_normal((n, 16), dtype=np.float32)
  txt = rng.standard_normal((16, m), dtype=np.float32)
  p = np.empty((n, m), np.float32)
  for lo in range(0, m, _BLOCK):
    hi = min(m, lo + _BLOCK)
    p[:, lo:hi] = (0.25 + 0.015 / 4.0 * (emb @ txt[:, lo:hi]) +
                   0.015 * rng.standard_normal((n, hi - lo),
                                               dtype=np.float32))
  sets = [rng.choice(m, 1 + i % 5, replace=False) for i in range(k)]
  act = np.empty((n, k), np.float32)
  for i, s in enumerate(sets):
    c = 1.0 / (1.0 + np.exp(-58.0 * (p[:, s] - 0.25)))
    w = rng.uniform(0.6, 1.4, len(s)) * rng.choice([-1.0, 1.0], len(s))
    signal = c @ w
    act[:, i] = signal / signal.std() + noise * rng.standard_normal(n)
  return act, p, sets


def _measure(n: int, k: int, m: int, loop_neurons: int) -> dict:
  """Runs in a spawned process."""
  from jax_dissect.analyses.linear_explanations import solver as le  # pylint: disable=g-import-not-at-top

  load_before = os.getloadavg()
  act, p, sets = make_layer(n, k, m)
  t0 = time.perf_counter()
  out = le.linear_explanations(act, p)
  wall = time.perf_counter() - t0

  opts = le.check_options()
  t0 = time.perf_counter()
  design = le.prepare(p, a=58.0, b=-0.25, seed=0, num_images=n)
  y_fit, y_held, _ = le.standardize_activations(act, design.fit,
                                                design.heldout)
  prepare_s = time.perf_counter() - t0
  le.explain_chunk(design, y_fit[:, :1], y_held[:, :1], opts)  # Compile.
  t0 = time.perf_counter()
  for j in range(1, 1 + loop_neurons):
    le.explain_chunk(design, y_fit[:, j:j + 1], y_held[:, j:j + 1], opts)
  per_neuron = (time.perf_counter() - t0) / loop_neurons

  got = [set(r[r >= 0].tolist()) for r in out.concepts]
  tp = sum(len(g & set(s.tolist())) for g, s in zip(got, sets))
  loop_scaled = per_neuron * k
  return {
      "wall_s": round(wall, 3), "prepare_s": round(prepare_s, 3),
      "loop_neurons": loop_neurons,
      "loop_s_per_neuron": round(per_neuron, 4),
      "loop_s_scaled": round(loop_scaled, 1),
      "speedup": round(loop_scaled / (wall - prepare_s), 2),
      "speedup_end_to_end": round((prepare_s + loop_scaled) / wall, 2),
      "precision": round(tp / max(1, sum(map(len, got))), 4),
      "recall": round(tp / sum(map(len, sets)), 4),
      "mean_correlation": round(float(np.nanmean(out.correlation)), 4),
      "mean_length": round(float(np.mean(out.lengths)), 3),
      "peak_rss_mb": round(similarity_bench.peak_rss_mb(), 1),
      "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
  }


def run(sizes, loop_neurons) -> Iterator[dict]:
  """Yields one record per size."""
  from jax_dissect.analyses.linear_explanations import solver as le  # pylint: disable=g-import-not-at-top
  for n, k, m in sizes:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
      res = pool.apply(_measure, (n, k, m, loop_neurons))
    yield {"N": n, "K": k, "M": m, "chunk_size": le.DEFAULT_CHUNK,
           **le.DEFAULTS, **res}

