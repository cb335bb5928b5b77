"""Label p-values (B permutations) against one labeling of the same layer.

Each case runs in a fresh spawned process (its own peak RSS). In it, one
labeling (similarity.compute on one device, input validation included) and
significance.label_pvalues are timed alternately, `reps` warm calls each
(compilation excluded), best kept; then the stages of the pooled null are
timed once each (warm) to show where the time goes.

Records: {"kernel", "N", "K", "M", "B", "null", "pooled", "pool_size",
"label_s", "pvalues_s", "ratio" (pvalues_s / label_s), "stages" (seconds per
stage, pooled null only), "peak_rss_mb", "loadavg_before", "loadavg_after"}.
Data: A standard normal, P uniform in [0.1, 0.35] (as the similarity suite).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from typing import Iterator

import numpy as np

from benchmarks import similarity as similarity_bench

PRESETS = {
    "full": {
        "sizes": [(10000, 2048, 20000)],
        "kernels": ["soft_wpmi", "wpmi"],
        "num_permutations": 100,
        "reps": 3,
        # Kernels on the exact path (B re-runs), timed with fewer draws.
        "exact_kernels": ["cos_similarity"],
        "exact_num_permutations": 3,
        "exact_reps": 2,
    },
    "quick": {
        "sizes": [(1000, 64, 500)],
        "kernels": ["soft_wpmi", "wpmi"],
        "num_permutations": 20,
        "reps": 2,
        "exact_kernels": ["cos_similarity"],
        "exact_num_permutations": 3,
        "exact_reps": 1,
    },
}


def _inputs(n: int, k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, k), dtype=np.float32)
  p = rng.uniform(0.1, 0.35, size=(n, m)).astype(np.float32)
  return a, p


def _timed(fn) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def _stages(kernel: str, a, p, num_permutations: int) -> dict:
  """Seconds of each stage of the pooled null (warm, one call each)."""
  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  from jax_dissect.analyses.scoring import significance  # pylint: disable=g-import-not-at-top
  # pylint: disable=protected-access
  n, k = a.shape
  m = p.shape[1]
  plan, key = similarity.resolve_plan(kernel, n, k, m,
                                     **similarity.fit_hyper(kernel, n, {}))
  pool_size = min(k * num_permutations,
                  max(num_permutations, significance.DEFAULT_POOL_SIZE))
  chunk = int(min(k, significance._null_chunk(m)))
  out = {}
  steps = [
      ("validate", lambda: similarity.validate_inputs(a, p)),
      ("softmax_q", lambda: significance._context(plan, p, key)),
  ]
  ctx = significance._context(plan, p, key)
  steps.append(("observed_scores",
                lambda: significance._scores(plan, a, ctx)))
  steps.append(("pool_likelihoods", lambda: significance._pool_likelihoods(
      plan, ctx, key, n, pool_size)))
  _, ll = significance._scores(plan, a, ctx)
  steps.append(("leave_one_out",
                lambda: significance.leave_one_out_logsumexp(ll)))
  steps.append(("pool_draws", lambda: significance._pool_draws(
      key, k, num_permutations, pool_size)))
  pool = significance._pool_likelihoods(plan, ctx, key, n, pool_size)
  loo = significance.leave_one_out_logsumexp(ll)
  draws = significance._pool_draws(key, k, num_permutations, pool_size)
  steps.append(("null_scores", lambda: significance._pooled_null(
      pool, loo, draws, lam=plan.lam, num_neurons=k, chunk=chunk)))
  for name, fn in steps:
    _timed(fn)  # Warm.
    out[name] = round(_timed(fn), 4)
  return out


def _measure(kernel: str, n: int, k: int, m: int, num_permutations: int,
             reps: int) -> dict:
  """Runs in a spawned process."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  from jax_dissect.analyses.scoring import significance  # pylint: disable=g-import-not-at-top

  load_before = os.getloadavg()
  a, p = (jnp.asarray(x) for x in _inputs(n, k, m))
  def label():
    return similarity.compute(kernel, a, p, devices=1)

  def pvalues():
    return significance.label_pvalues(
        a, p, kernel, num_permutations=num_permutations).p_values

  label()  # Compile.
  pvalues()
  label_s, pvalues_s = float("inf"), float("inf")
  for _ in range(reps):  # Alternate, so that both see the same load.
    label_s = min(label_s, _timed(label))
    pvalues_s = min(pvalues_s, _timed(pvalues))
  pooled = similarity.get_kernel(kernel).uses_top_k
  rec = {
      "label_s": label_s, "pvalues_s": pvalues_s,
      "ratio": pvalues_s / label_s, "pooled": pooled,
      "pool_size": (min(k * num_permutations,
                        max(num_permutations,
                            significance.DEFAULT_POOL_SIZE))
                    if pooled else None),
      "stages": _stages(kernel, a, p, num_permutations) if pooled else None,
  }
  rec["peak_rss_mb"] = similarity_bench.peak_rss_mb()
  rec["loadavg_before"] = load_before
  rec["loadavg_after"] = os.getloadavg()
  return rec


def _run_one(kernel, n, k, m, num_permutations, reps) -> dict:
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(1) as pool:
    res = pool.apply(_measure, (kernel, n, k, m, num_permutations, reps))
  return {"kernel": kernel, "N": n, "K": k, "M": m, "B": num_permutations,
          "null": "neuron", **res}


def run(sizes, kernels, num_permutations, reps, exact_kernels,
        exact_num_permutations, exact_reps) -> Iterator[dict]:
  """Yields one record per (size, kernel)."""
  for n, k, m in sizes:
    for kernel in kernels:
      yield _run_one(kernel, n, k, m, num_permutations, reps)
    for kernel in exact_kernels:
      yield _run_one(kernel, n, k, m, exact_num_permutations, exact_reps)
