"""The cache benchmark's measurements work (tiny sizes; the full suite runs
describe_neurons many times and is run by scripts/benchmark.py)."""

import numpy as np

from benchmarks import cache as suite
from jax_dissect.store import cache as cache_lib


def test_verify_all_and_throughput(tmp_path):
  assert {"smoke", "quick"} <= set(suite.PRESETS)
  c = cache_lib.ArrayCache(str(tmp_path / "cache"))
  c.save(c.key("a", n=1), np.ones((100, 10), np.float32))
  c.save(c.key("b", n=1), np.ones((50, 3), np.float32))
  out = suite._verify_all(str(tmp_path / "cache"))  # pylint: disable=protected-access
  assert out["entries"] == 2 and out["damaged"] == 0 and out["bytes"] > 4600
  assert suite._throughput(str(tmp_path), 1) > 0  # pylint: disable=protected-access


def test_fingerprint_timings(tmp_path):
  out = suite._fingerprints(str(tmp_path))  # pylint: disable=protected-access
  assert out["images"] == 1000
  assert out["content_rerun_s"] < out["content_first_s"]
