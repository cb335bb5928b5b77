"""Similarity kernels vs the original program, a numpy loop and floors.

Presets "full" and "quick": every measurement runs in a fresh spawned
process so that its peak RSS is its own. Times are the best of `reps` warm
calls (compilation excluded) for the jitted kernels, one call for the numpy
loops (they have nothing to warm).

Records: {"kernel", "impl", "N", "K", "M", "seconds", "neurons_per_s",
"peak_rss_mb"} and, per kernel and size, a "ratios" record.
  impl="jax": jax_dissect.similarity.<kernel> on one device.
  impl="numpy_loop": the straightforward per-neuron numpy implementation.
  impl="log_floor": jit(jnp.log) over K*top_k*M float32 values.
  impl="matmul": jit(A.T @ P) of the same shapes (cos kernels' floor).

Presets "original" and "original_quick": jax_dissect against the original
CLIP-Dissect program shape in PyTorch (_original_torch.py: per-neuron
loops for (soft_)wpmi and rank_reorder, blocked matmuls for the cos
kernels), float32 on the CPU, same inputs, in one spawned process per case.
After one warm-up call of each (jax compiles), jax and torch passes
alternate `reps` times. Records (each with the load average):
  impl="jax" (similarity.compute on the numpy arrays a user holds: the
    hand-off to the device is timed), "jax_device" (on jax arrays made
    beforehand) / "original_torch" (on torch tensors sharing the numpy
    memory, as the original program gets them): "passes_s", "best_s",
    "median_s", "neurons_per_s" (best), "load_avg_1min_per_pass".
  impl="ratio_vs_original": "speedup_best", "speedup_median" (torch time /
    jax time per neuron, numpy inputs), "speedup_best_device",
    "speedup_median_device" (jax arrays), "labels_equal" (fraction of neurons whose argmax
    concept is the same), "max_abs_diff"; for (soft_)wpmi with
    float64_labels, the fraction of each implementation's labels equal to
    a float64 numpy loop's ("jax_labels_equal_float64", ...).
  impl="jax_stages" / "original_torch_stages" ((soft_)wpmi): where the time
    goes, seconds per stage of the best pass.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import statistics
import time
from typing import Any, Iterator

import numpy as np

PRESETS = {
    "full": {
        "sizes": [(2000, 256, 5000), (10000, 512, 20000)],
        "kernels": ["soft_wpmi", "wpmi", "cos_similarity",
                    "cos_similarity_cubed"],
        "rank_reorder_sizes": [(2000, 64, 1000)],
        "memory_sizes": [(10000, 2048, 20000)],
        "numpy_max_neurons_cos": 64,
        "reps": 3,
    },
    "quick": {
        "sizes": [(500, 32, 300)],
        "kernels": ["soft_wpmi", "wpmi", "cos_similarity",
                    "cos_similarity_cubed"],
        "rank_reorder_sizes": [(500, 8, 100)],
        "memory_sizes": [(500, 64, 300)],
        "numpy_max_neurons_cos": 32,
        "reps": 2,
    },
    # The cos kernels against a matrix product of the same shapes (their
    # floor; issue 30's target is 1.3x), up to a ResNet-50 layer4's 2048
    # neurons.
    # Alternating in one process, best and median of 7.
    "cos_floor": {
        "matmul_cases": [
            {"kernel": kernel, "N": n, "K": k, "M": m}
            for n, k, m in ((2000, 256, 5000), (10000, 512, 20000),
                            (10000, 2048, 20000))
            for kernel in ("cos_similarity", "cos_similarity_cubed")],
        "reps": 7,
    },
    # The issue-13 sizes against the original program; cos kernels at the
    # large size, rank_reorder (a sort per neuron and concept) smaller.
    "original": {
        "original_cases": [
            {"kernel": "soft_wpmi", "N": 5000, "K": 256, "M": 20000},
            {"kernel": "wpmi", "N": 5000, "K": 256, "M": 20000},
            {"kernel": "soft_wpmi", "N": 10000, "K": 512, "M": 20000},
            {"kernel": "wpmi", "N": 10000, "K": 512, "M": 20000},
            {"kernel": "cos_similarity", "N": 10000, "K": 512, "M": 20000},
            {"kernel": "cos_similarity_cubed", "N": 10000, "K": 512,
             "M": 20000},
            {"kernel": "rank_reorder", "N": 2000, "K": 64, "M": 1000},
        ],
        "float64_labels": True,
        "reps": 5,
        "quiet_load": 1.5,
        "quiet_wait_s": 300,
    },
    # Only issue 13's target cases ((soft_)wpmi at both sizes), waiting at
    # most a minute per case for a quiet machine: a re-check after a change.
    "original_targets": {
        "original_cases": [
            {"kernel": kernel, "N": n, "K": k, "M": 20000}
            for n, k in ((5000, 256), (10000, 512))
            for kernel in ("soft_wpmi", "wpmi")],
        "float64_labels": True,
        "reps": 5,
        "quiet_load": 1.5,
        "quiet_wait_s": 60,
    },
    "original_quick": {
        "original_cases": [
            {"kernel": "soft_wpmi", "N": 300, "K": 16, "M": 200},
            {"kernel": "wpmi", "N": 300, "K": 16, "M": 200},
            {"kernel": "cos_similarity", "N": 300, "K": 16, "M": 200},
            {"kernel": "cos_similarity_cubed", "N": 300, "K": 16, "M": 200},
            {"kernel": "rank_reorder", "N": 300, "K": 16, "M": 200,
             "torch_neurons": 8},
        ],
        "float64_labels": True,
        "reps": 2,
    },
}

_TOP_K = {"soft_wpmi": 100, "wpmi": 28}


def _inputs(n: int, k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(0)
  a = rng.standard_normal((n, k), dtype=np.float32)
  p = rng.uniform(0.1, 0.35, size=(n, m)).astype(np.float32)
  return a, p


def peak_rss_mb() -> float:
  """This process's peak resident set size so far, in MiB."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ----------------------------------------------------------------------------
# Straightforward per-neuron numpy implementations (the reference's loop).
# ----------------------------------------------------------------------------


def _np_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max(axis=1, keepdims=True)
  np.exp(x, out=x)
  x /= x.sum(axis=1, keepdims=True)
  return x


def _np_prior(ll: np.ndarray) -> np.ndarray:
  mx = ll.max(axis=0)
  return mx + np.log(np.exp(ll - mx).sum(axis=0)) - np.log(ll.shape[0])


def numpy_soft_wpmi(a, p, top_k=100, alpha=10.0, lam=1.0, p_start=0.998,
                    p_end=0.97, eps=1e-7):
  q = _np_softmax(alpha * p)  # In p's dtype (float64 for a reference).
  j = np.arange(top_k, dtype=q.dtype)
  w = (p_start - (j / top_k) * (p_start - p_end))[:, None]
  ll = np.empty((a.shape[1], p.shape[1]), q.dtype)
  for k in range(a.shape[1]):
    idx = np.argsort(-a[:, k])[:top_k]
    ll[k] = np.log(1 + w * (q[idx] - 1) + eps).sum(axis=0)
  return ll - lam * _np_prior(ll)


def numpy_wpmi(a, p, top_k=28, alpha=2.0, lam=0.6, eps=1e-7):
  q = _np_softmax(alpha * p)
  ll = np.empty((a.shape[1], p.shape[1]), q.dtype)
  for k in range(a.shape[1]):
    idx = np.argsort(-a[:, k])[:top_k]
    ll[k] = np.log(q[idx] + eps).sum(axis=0)
  return ll - lam * _np_prior(ll)


def numpy_cos_similarity(a, p):
  p_hat = p / np.linalg.norm(p, axis=0, keepdims=True)
  out = np.empty((a.shape[1], p.shape[1]), np.float32)
  for k in range(a.shape[1]):
    out[k] = (a[:, k] / np.linalg.norm(a[:, k])) @ p_hat
  return out


def numpy_cos_similarity_cubed(a, p, min_norm=1e-3):
  def norm(x):
    x = (x - x.mean(axis=0)) ** 3
    return x / np.maximum(np.linalg.norm(x, axis=0), min_norm)
  p_hat = norm(p)
  out = np.empty((a.shape[1], p.shape[1]), np.float32)
  for k in range(a.shape[1]):
    out[k] = norm(a[:, k]) @ p_hat
  return out


_NUMPY = {
    "soft_wpmi": numpy_soft_wpmi,
    "wpmi": numpy_wpmi,
    "cos_similarity": numpy_cos_similarity,
    "cos_similarity_cubed": numpy_cos_similarity_cubed,
}


# ----------------------------------------------------------------------------
# One measurement per process.
# ----------------------------------------------------------------------------


def _best_of(fn, reps: int) -> float:
  fn()  # Warm-up / compile.
  best = float("inf")
  for _ in range(reps):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def _measure(impl: str, kernel: str, n: int, k: int, m: int,
             reps: int) -> dict:
  """Runs in a spawned process; returns seconds and peak RSS."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top

  a, p = _inputs(n, k, m)
  if impl == "jax":
    aj, pj = jnp.asarray(a), jnp.asarray(p)
    seconds = _best_of(lambda: similarity.compute(
        kernel, aj, pj, devices=1).block_until_ready(), reps)
  elif impl == "numpy_loop":
    fn = _NUMPY[kernel]
    t0 = time.perf_counter()
    fn(a, p)
    seconds = time.perf_counter() - t0
  elif impl == "log_floor":
    del a, p
    # Values in [0.001, 0.997], built in place (no random-bit temporaries).
    x = jax.jit(lambda: (jax.lax.broadcasted_iota(
        jnp.int32, (k * _TOP_K[kernel], m), 1) % 997 + 1).astype(
            jnp.float32) / 1000.0)()
    log = jax.jit(jnp.log)
    seconds = _best_of(lambda: log(x).block_until_ready(), reps)
  elif impl == "matmul":
    aj, pj = jnp.asarray(a), jnp.asarray(p)
    matmul = jax.jit(lambda x, y: x.T @ y)
    seconds = _best_of(lambda: matmul(aj, pj).block_until_ready(), reps)
  else:
    raise ValueError(impl)
  return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def _run_one(impl, kernel, n, k, m, reps, neurons=None) -> dict:
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(1) as pool:
    res = pool.apply(_measure, (impl, kernel, n, neurons or k, m, reps))
  k_run = neurons or k
  return {"kernel": kernel, "impl": impl, "N": n, "K": k_run, "M": m,
          **res, "neurons_per_s": k_run / res["seconds"]}


def _alternate(fns: dict[str, Any], reps: int
               ) -> tuple[dict[str, list[float]], list[float]]:
  """`reps` rounds of one pass of each fn in turn: ({name: seconds per
  pass}, 1-minute load after each round)."""
  passes = {name: [] for name in fns}
  loads = []
  for _ in range(reps):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      passes[name].append(time.perf_counter() - start)
    loads.append(round(os.getloadavg()[0], 2))
  return passes, loads


def _compare_matmul(case: dict, reps: int) -> dict:
  """Runs in a spawned process: the kernel on arrays on the device and a
  jitted A.T @ P of the same shapes, alternating, `reps` passes each."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top

  kernel, n, k, m = case["kernel"], case["N"], case["K"], case["M"]
  a, p = _inputs(n, k, m)
  aj, pj = jnp.asarray(a), jnp.asarray(p)
  del a, p
  matmul = jax.jit(lambda x, y: x.T @ y)
  fns = {"jax": lambda: jax.block_until_ready(
             similarity.compute(kernel, aj, pj, devices=1)),
         "matmul": lambda: jax.block_until_ready(matmul(aj, pj))}
  for fn in fns.values():
    fn()  # Compiles.
  passes, _ = _alternate(fns, reps)
  stats = {name: _stats(v) for name, v in passes.items()}
  return {**case, "impl": "vs_matmul", "jax": stats["jax"],
          "matmul": stats["matmul"],
          "time_over_matmul_best": (stats["jax"]["best_s"] /
                                    stats["matmul"]["best_s"]),
          "time_over_matmul_median": (stats["jax"]["median_s"] /
                                      stats["matmul"]["median_s"]),
          "load_avg": load_avg()}


# ----------------------------------------------------------------------------
# Against the original program (PyTorch), alternating passes in one process.
# ----------------------------------------------------------------------------


def load_avg() -> list[float]:
  """The 1-, 5- and 15-minute load averages, rounded to 0.01."""
  return [round(x, 2) for x in os.getloadavg()]


def _stats(passes: list[float]) -> dict[str, Any]:
  return {"passes_s": passes, "best_s": min(passes),
          "median_s": statistics.median(passes)}


def _jax_stages(kernel: str, aj, pj, reps: int) -> dict[str, float]:
  """Best seconds of the jax kernel's stages, each jitted on its own."""
  import jax  # pylint: disable=g-import-not-at-top

  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  from jax_dissect.similarity import kernels  # pylint: disable=g-import-not-at-top
  (n, k), m = aj.shape, pj.shape[1]
  plan = similarity.plan_kernel(kernel, n, k, m)
  # The per-concept context without P itself (returning an input from jit
  # would copy it).
  prepare = jax.jit(lambda x: [
      v for v in jax.tree.leaves(plan.prepare(x)) if v is not x])
  ctx = jax.jit(plan.prepare)(pj)
  scores = jax.jit(lambda x, c: kernels.map_neuron_chunks(
      lambda xs, ids: plan.neuron_scores(xs, ids, c), x, plan.chunk_size))
  ll = scores(aj, ctx)
  prior = jax.jit(lambda l: l - plan.lam * kernels.log_prior(l))
  stages = {
      "validate_inputs": lambda: similarity.validate_inputs(aj, pj),
      "prepare (softmax row max and sum)": lambda: prepare(pj),
      "neuron_scores (top_k, Q tiles, gather-multiply-log)":
          lambda: scores(aj, ctx),
      "prior (logsumexp over neurons)": lambda: prior(ll),
  }
  return {name: _best_of(lambda f=fn: jax.block_until_ready(f()), reps)
          for name, fn in stages.items()}


def _compare_original(case: dict, reps: int, float64_labels: bool
                      ) -> list[dict]:
  """Runs in a spawned process: jax and torch passes, alternating."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  from torch_reference import original  # pylint: disable=g-import-not-at-top

  kernel, n, k, m = case["kernel"], case["N"], case["K"], case["M"]
  k_torch = min(k, case.get("torch_neurons") or k)
  common = {"kernel": kernel, "N": n, "K": k, "M": m,
            "load_avg_at_start": load_avg()}
  a, p = _inputs(n, k, m)
  aj, pj = jnp.asarray(a), jnp.asarray(p)
  at = torch.from_numpy(np.ascontiguousarray(a[:, :k_torch]))
  pt = torch.from_numpy(p)
  jax_kw, torch_kw = {}, {}
  if kernel == "rank_reorder":
    key = jax.random.key(0)
    jax_kw["key"] = key
    torch_kw["permutations"] = np.asarray(
        similarity.rank_reorder_permutations(key, jnp.arange(k_torch),
                                             int(n * 0.05)))
  stage_kernel = kernel in _TOP_K
  torch_stages = []

  def jax_pass():
    return similarity.compute(kernel, a, p, devices=1, **jax_kw
                              ).block_until_ready()

  def jax_device_pass():
    return similarity.compute(kernel, aj, pj, devices=1, **jax_kw
                              ).block_until_ready()

  def torch_pass():
    if stage_kernel:
      torch_stages.append({})
      torch_kw["timings"] = torch_stages[-1]
    return original.FUNCTIONS[kernel](at, pt, **torch_kw)

  start = time.perf_counter()
  s_jax = np.asarray(jax_pass())
  first_call_s = time.perf_counter() - start
  jax_device_pass()  # Warm-up.
  s_torch = torch_pass().numpy()  # Warm-up.
  torch_stages.clear()
  passes, loads = _alternate({"jax": jax_pass, "jax_device": jax_device_pass,
                              "original_torch": torch_pass}, reps)

  records = []
  for impl, neurons in (("jax", k), ("jax_device", k),
                        ("original_torch", k_torch)):
    rec = {**common, "impl": impl, "comparison": "original",
           "neurons": neurons, **_stats(passes[impl]),
           "neurons_per_s": neurons / min(passes[impl]),
           "load_avg_1min_per_pass": loads, "load_avg": load_avg()}
    if impl.startswith("jax"):
      rec.update(jax_version=jax.__version__)
      if impl == "jax":
        rec.update(first_call_s=first_call_s)
    else:
      rec.update(torch_version=torch.__version__,
                 torch_threads=torch.get_num_threads())
    records.append(rec)
  jax_rec, device_rec, torch_rec = records
  per_neuron = {impl: statistics.median(v) / r["neurons"]
                for (impl, v), r in zip(passes.items(), records)}
  ratio = {
      **common, "impl": "ratio_vs_original",
      "speedup_best": jax_rec["neurons_per_s"] / torch_rec["neurons_per_s"],
      "speedup_median": per_neuron["original_torch"] / per_neuron["jax"],
      "speedup_best_device": (device_rec["neurons_per_s"] /
                              torch_rec["neurons_per_s"]),
      "speedup_median_device": (per_neuron["original_torch"] /
                                per_neuron["jax_device"]),
      "labels_equal": float(np.mean(
          s_jax[:k_torch].argmax(1) == s_torch.argmax(1))),
      "max_abs_diff": float(np.abs(s_jax[:k_torch] - s_torch).max()),
      "max_abs_s": float(np.abs(s_jax).max()),
      "torch_neurons": k_torch, "load_avg": load_avg()}
  if stage_kernel:
    best = int(np.argmin(passes["original_torch"]))
    records.append({**common, "impl": "original_torch_stages",
                    "stages_s": torch_stages[best],
                    "load_avg": load_avg()})
    records.append({**common, "impl": "jax_stages",
                    "stages_s": _jax_stages(kernel, aj, pj, reps),
                    "load_avg": load_avg()})
    if float64_labels:
      labels64 = _NUMPY[kernel](a.astype(np.float64),
                                p.astype(np.float64)).argmax(1)
      ratio.update(
          jax_labels_equal_float64=float(np.mean(s_jax.argmax(1) ==
                                                 labels64)),
          torch_labels_equal_float64=float(np.mean(s_torch.argmax(1) ==
                                                   labels64)))
  records.append(ratio)
  return records


def wait_for_quiet(max_load: float | None, max_wait_s: float) -> float:
  """Waits until the 1-minute load average is below max_load (or gives up).

  The cores are shared; the original program's OpenMP threads slow down
  far more than XLA's when another process holds a core, so the
  comparison starts on a quiet machine when it can. Returns seconds waited.
  """
  start = time.monotonic()
  while (max_load is not None and os.getloadavg()[0] >= max_load and
         time.monotonic() - start < max_wait_s):
    time.sleep(5.0)
  return time.monotonic() - start


def _check_case(case: dict) -> None:
  if case["kernel"] not in _ORIGINAL_KERNELS:
    raise ValueError(f"kernel={case['kernel']!r}; allowed: "
                     f"{sorted(_ORIGINAL_KERNELS)}")
  if case.get("torch_neurons") and case["kernel"] in _TOP_K:
    raise ValueError(f"torch_neurons cannot be set for {case['kernel']}: "
                     "its prior is over all K neurons")


_ORIGINAL_KERNELS = ("soft_wpmi", "wpmi", "cos_similarity",
                     "cos_similarity_cubed", "rank_reorder")


def run(sizes=(), kernels=(), rank_reorder_sizes=(), memory_sizes=(),
        numpy_max_neurons_cos=64, reps=3, original_cases=(),
        float64_labels=False, quiet_load=None,
        quiet_wait_s=0.0, matmul_cases=()) -> Iterator[dict]:
  """Yields one record per measurement and one ratio record per case.

  matmul_cases: dicts {"kernel", "N", "K", "M"}: the kernel against a
  matrix product of the same shapes (the cos kernels' floor), alternating
  in one spawned process.

  memory_sizes: (N, K, M) at which (soft_)wpmi run alone, to show they fit
  in memory (peak RSS) at the issue's largest size.
  original_cases: dicts {"kernel", "N", "K", "M"[, "torch_neurons"]}
  compared with the original program (torch_neurons caps the neurons of
  the torch loop; compared per neuron); before each, up to quiet_wait_s
  seconds of waiting for a 1-minute load average below quiet_load.
  """
  for case in (*original_cases, *matmul_cases):
    _check_case(case)
  ctx = multiprocessing.get_context("spawn")
  for case in matmul_cases:
    with ctx.Pool(1) as pool:
      yield pool.apply(_compare_matmul, (case, reps))
  for n, k, m in memory_sizes:
    for kernel in ("soft_wpmi", "wpmi"):
      yield _run_one("jax", kernel, n, k, m, 1)
  for n, k, m in sizes:
    for kernel in kernels:
      jax_rec = _run_one("jax", kernel, n, k, m, reps)
      yield jax_rec
      ratios = {"kernel": kernel, "impl": "ratios", "N": n, "K": k, "M": m}
      # The cos loops do a full (N,) @ (N, M) per neuron: time a subset.
      np_k = (min(k, numpy_max_neurons_cos) if kernel.startswith("cos")
              else k)
      np_rec = _run_one("numpy_loop", kernel, n, k, m, 1, neurons=np_k)
      yield np_rec
      ratios["speedup_vs_numpy_loop"] = (
          jax_rec["neurons_per_s"] / np_rec["neurons_per_s"])
      if kernel in _TOP_K:
        floor = _run_one("log_floor", kernel, n, k, m, reps)
        yield floor
        ratios["time_over_log_floor"] = jax_rec["seconds"] / floor["seconds"]
      else:
        mm = _run_one("matmul", kernel, n, k, m, reps)
        yield mm
        ratios["time_over_matmul"] = jax_rec["seconds"] / mm["seconds"]
      yield ratios
  for n, k, m in rank_reorder_sizes:
    yield _run_one("jax", "rank_reorder", n, k, m, reps)
  for case in original_cases:
    waited = wait_for_quiet(quiet_load, quiet_wait_s)
    with ctx.Pool(1) as pool:
      for record in pool.apply(_compare_original,
                               (case, reps, float64_labels)):
        yield {**record, "waited_for_quiet_s": round(waited, 1)}
