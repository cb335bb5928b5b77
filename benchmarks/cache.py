"""The cost of the cache's integrity checks on a cached rerun.

1. Fills a cache with one describe_neurons run of a smoke config (a
   subprocess, one CPU device, as a user's command).
2. Reruns it from the cache `repeats` times for each of
   cache_verify=checksum (the default: size, header and CRC-32 of every
   entry read) and cache_verify=header (size and header only: the checks
   that cost no read), alternating the two, each a fresh process; records
   wall times and the load average.
   With `baseline_repo` (a checkout of the code before the checks, e.g.
   `git archive main`), its cached reruns (own cache, filled by one cold
   run of it) alternate with the two modes too: today's cached-rerun time.
3. Times verifying every entry of that cache in one process (all CRCs), and
   the CRC throughput on a larger file, to scale the cost to bigger caches.
4. Times probe_fingerprint=content on the ImageNet sample's 1000 photos: the
   first run (every file hashed) and a rerun (digests reused), against the
   default stat fingerprint.
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("checksum", "header")

PRESETS = {
    "smoke": dict(config="configs/resnet18_cifar100.py:smoke", flags=(),
                  repeats=11, throughput_mb=512),
    "quick": dict(config="configs/resnet18_cifar100.py:smoke",
                  flags=("--config.max_images=64",
                         "--target_layers=layer1,layer4"),
                  repeats=2, throughput_mb=32),
}


def _describe(config: str, flags: tuple[str, ...], tmp: str,
              verify: str, baseline_repo: str | None = None) -> dict:
  """One describe_neurons process; its wall time and stage times.

  verify="baseline" runs `baseline_repo`'s code on its own cache.
  """
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  repo, cache, extra = REPO, f"{tmp}/cache", [f"--config.cache_verify={verify}"]
  if verify == "baseline":
    from configs import shared_data  # pylint: disable=g-import-not-at-top
    repo, cache, extra = baseline_repo, f"{tmp}/baseline_cache", []
    env["PYTHONPATH"] = baseline_repo
    env["JAX_DISSECT_SHARED_DATA"] = shared_data.root()  # The same data.
  t0 = time.perf_counter()
  subprocess.run(
      [sys.executable, os.path.join(repo, "scripts", "describe_neurons.py"),
       f"--config={os.path.join(repo, config)}", *flags,
       f"--result_dir={tmp}/results", f"--activation_dir={cache}", *extra],
      cwd=repo, env=env, check=True, capture_output=True)
  wall = time.perf_counter() - t0
  with open(f"{tmp}/results/config.json", encoding="utf-8") as f:
    cfg = json.load(f)
  return {"wall_s": wall, "stages_s": cfg["timings_s"],
          "num_images": cfg["num_images"],
          "num_concepts": cfg["num_concepts"]}


def _verify_all(cache_dir: str) -> dict:
  """Seconds to check every array entry of a cache (CRC included)."""
  from jax_dissect.store import integrity  # pylint: disable=g-import-not-at-top
  paths = [p for p in glob.glob(os.path.join(cache_dir, "*", "*.npy"))]
  for p in paths:
    integrity.forget(p)
  t0 = time.perf_counter()
  bad = [p for p in paths if integrity.verify(p) is not None]
  seconds = time.perf_counter() - t0
  return {"entries": len(paths), "damaged": len(bad),
          "bytes": sum(os.path.getsize(p) for p in paths),
          "seconds": seconds}


def _throughput(tmp: str, megabytes: int) -> float:
  """CRC-32 speed of a file in the page cache, GB/s (best of 3)."""
  from jax_dissect.store import integrity  # pylint: disable=g-import-not-at-top
  path = os.path.join(tmp, "big.npy")
  np.save(path, np.random.default_rng(0).random(megabytes << 17))
  best = float("inf")
  for _ in range(3):
    t0 = time.perf_counter()
    integrity.file_checksum(path)
    best = min(best, time.perf_counter() - t0)
  return os.path.getsize(path) / best / 1e9


def _fingerprints(tmp: str) -> dict:
  """Seconds of a folder's stat and content fingerprints (first, rerun)."""
  from configs import shared_data  # pylint: disable=g-import-not-at-top
  from jax_dissect.data import probes as data  # pylint: disable=g-import-not-at-top
  from jax_dissect.store import cache  # pylint: disable=g-import-not-at-top
  root = shared_data.path("imagenet_sample")
  store = cache.ArrayCache(os.path.join(tmp, "digests"))
  out = {"folder": "imagenet_sample"}
  for name, fingerprint in (("stat", "stat"), ("content_first", "content"),
                            ("content_rerun", "content")):
    folder = data.ImageFolder(root, fingerprint=fingerprint,
                              digests=data.FileDigests(store))
    t0 = time.perf_counter()
    folder.fingerprint()
    out[f"{name}_s"] = time.perf_counter() - t0
  out["images"] = len(folder)
  out["megabytes"] = sum(os.path.getsize(p) for p in folder.paths) / 1e6
  return out


def run(config, flags, repeats, throughput_mb, baseline_repo=None
        ) -> Iterator[dict]:
  """Yields one record per rerun, then the summary and the throughput."""
  modes = MODES + (("baseline",) if baseline_repo else ())
  with tempfile.TemporaryDirectory() as tmp:
    for mode in ("checksum", "baseline")[:1 + bool(baseline_repo)]:
      cold = _describe(config, flags, tmp, mode, baseline_repo)
      yield {"measure": "cold_run", "config": config, "flags": list(flags),
             "cache_verify": mode, "baseline_repo": baseline_repo, **cold,
             "loadavg": os.getloadavg()}
    walls = {m: [] for m in modes}
    for i in range(repeats):
      for mode in (modes if i % 2 == 0 else modes[::-1]):
        rec = _describe(config, flags, tmp, mode, baseline_repo)
        walls[mode].append(rec["wall_s"])
        yield {"measure": "cached_rerun", "config": config,
               "flags": list(flags), "cache_verify": mode, "repeat": i,
               **rec, "loadavg": os.getloadavg()}
    verify = _verify_all(f"{tmp}/cache")
    best = {m: min(w) for m, w in walls.items()}
    median = {m: statistics.median(w) for m, w in walls.items()}
    yield {"measure": "summary", "config": config, "flags": list(flags),
           "repeats": repeats, "best_s": best, "median_s": median,
           "overhead_best_pct": 100 * (best["checksum"] / best["header"] - 1),
           "overhead_median_pct": 100 * (median["checksum"] /
                                         median["header"] - 1),
           **({"baseline_repo": baseline_repo,
               "overhead_vs_baseline_best_pct": {
                   m: 100 * (best[m] / best["baseline"] - 1) for m in MODES},
               "overhead_vs_baseline_median_pct": {
                   m: 100 * (median[m] / median["baseline"] - 1)
                   for m in MODES}} if baseline_repo else {}),
           "verify_all": verify,
           "verify_all_pct_of_best_rerun": (
               100 * verify["seconds"] / best["checksum"]),
           "loadavg": os.getloadavg()}
    yield {"measure": "crc32_throughput", "megabytes": throughput_mb,
           "gb_per_s": _throughput(tmp, throughput_mb),
           "loadavg": os.getloadavg()}
    yield {"measure": "probe_fingerprint", **_fingerprints(tmp),
           "loadavg": os.getloadavg()}
