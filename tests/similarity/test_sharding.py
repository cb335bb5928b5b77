"""Sharded kernels equal the single-device result (8 host CPU devices)."""

import jax
import numpy as np
import pytest

from jax_dissect import similarity
from jax_dissect.similarity import sharding

_HYPER = {
    "soft_wpmi": {"top_k": 20},
    "wpmi": {"top_k": 10},
    "cos_similarity": {},
    "cos_similarity_cubed": {},
    "rank_reorder": {"key": jax.random.key(3)},
}


def _inputs(n, k, m, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.normal(size=(n, k)).astype(np.float32)
  p = rng.uniform(0.05, 0.4, size=(n, m)).astype(np.float32)
  return a, p


def test_eight_devices_available():
  assert jax.device_count() == 8


@pytest.mark.parametrize("method", sharding.METHODS)
@pytest.mark.parametrize("k", [8, 13, 2048])
@pytest.mark.parametrize("name", sorted(_HYPER))
def test_sharded_equals_single_device(name, k, method):
  if k == 2048 and name == "rank_reorder":
    n, m = 60, 8  # rank_reorder sorts (K, n, M): keep it small.
  else:
    n, m = (64, 16) if k == 2048 else (80, 24)
  a, p = _inputs(n, k, m, seed=k)
  single = similarity.compute(name, a, p, devices=1, **_HYPER[name])
  sharded = similarity.compute(name, a, p, method=method, **_HYPER[name])
  assert sharded.shape == (k, m)
  if name in ("soft_wpmi", "wpmi"):
    # The prior is taken by the same program for any device count: the
    # same bits, so near-tied concepts rank the same.
    np.testing.assert_array_equal(sharded, single)
  np.testing.assert_allclose(sharded, single, rtol=1e-5, atol=1e-5)


def test_subset_of_devices_and_chunking():
  a, p = _inputs(50, 13, 10)
  single = similarity.soft_wpmi(a, p, top_k=7)
  for devices in (3, jax.devices()[2:7]):
    out = similarity.compute("soft_wpmi", a, p, devices=devices,
                             chunk_size=2, top_k=7)
    np.testing.assert_array_equal(out, single)


def test_bad_arguments():
  a, p = _inputs(50, 4, 10)
  with pytest.raises(ValueError, match="method='vmap'"):
    similarity.compute("wpmi", a, p, method="vmap")
  with pytest.raises(ValueError, match="devices=9"):
    similarity.compute("wpmi", a, p, devices=9)
  with pytest.raises(ValueError, match="unknown similarity function"):
    similarity.compute("wmpi", a, p)
  with pytest.raises(ValueError, match="top_k=51"):
    similarity.compute("wpmi", a, p, top_k=51, fit=False)
  with pytest.raises(ValueError, match="wpmi has no hyper-parameter"):
    similarity.compute("wpmi", a, p, topk=5)
