"""(soft_)wpmi's blocked products and concept tiles are exact to float32.

The kernels multiply up to product_block_size factors before one log and
compute Q = softmax(a P) a tile of concepts at a time; these tests hold the
exactness arguments of similarity.py to account: the block sizes keep every
product a normal float32, and extreme Q (exactly 0, close to 1), p_start=1
and the eps bounds still give the float64 per-factor sum of logs.
"""

import math

import numpy as np
import pytest

from jax_dissect import similarity
from jax_dissect.similarity import kernels
from jax_dissect.similarity import runner as compute_lib
from tests.helpers import numpy_kernels as refs

RTOL, ATOL = 1e-5, 1e-4
TINY = float(np.finfo(np.float32).tiny)
HUGE = float(np.finfo(np.float32).max)


@pytest.mark.parametrize("lo,hi,want", [
    (1 - 0.998 + 1e-7, 1 + 1e-7, 14),  # soft_wpmi defaults.
    (1e-7, 1 + 1e-7, 5),  # wpmi defaults; soft_wpmi with p_start=1.
    (0.5, 1.5, 16),  # Capped at _MAX_PRODUCT_BLOCK.
    (1e-30, 1.0, 1),  # One factor per log.
    (1e-7, 1e30, 1),  # Huge eps: products would overflow.
])
def test_block_sizes(lo, hi, want):
  assert kernels.product_block_size(lo, hi) == want


@pytest.mark.parametrize("lo", np.geomspace(1e-7, 0.99, 40))
def test_products_of_block_stay_normal_and_block_is_largest(lo):
  block = kernels.product_block_size(lo, 1.0 + 1e-7)
  # The bound itself, in float32 arithmetic (numpy does not flush
  # subnormals, so a product below tiny would show).
  factor = np.float32(0.99 * lo)
  product = np.prod(np.full(block, factor, np.float32), dtype=np.float32)
  assert product >= TINY
  if block < kernels._MAX_PRODUCT_BLOCK:  # pylint: disable=protected-access
    assert (0.99 * lo)**(block + 1) < TINY  # One more would underflow.
  big = kernels.product_block_size(lo, 3.0)
  assert (1.01 * 3.0)**big <= HUGE


def test_bad_bounds():
  with pytest.raises(ValueError, match="positive"):
    kernels.product_block_size(0.0, 1.0)
  with pytest.raises(ValueError, match="ordered"):
    kernels.product_block_size(2.0, 1.0)


def _extreme_inputs(n=120, k=6, m=40, seed=0):
  """P one-hot-ish: with a large a, Q is 0 in float32 off the hot concept.

  Each image's hot concept has P = 1, the others P in [0, 0.1]; with a=200
  the cold Q are < exp(-180) (0 in float32 and far below eps), the hot Q is
  ~1 (its factor 1 + eps, log ~ 1e-7).
  """
  rng = np.random.default_rng(seed)
  a = rng.permutation(n * k).reshape(n, k).astype(np.float32)
  p = rng.uniform(0.0, 0.1, (n, m)).astype(np.float32)
  p[np.arange(n), rng.integers(0, 4, n)] = 1.0  # Four concepts get all hits.
  return a, p


@pytest.mark.parametrize("hyper", [
    dict(a=200.0),
    dict(a=200.0, p_start=1.0, p_end=1.0),  # Factors eps or 1 + eps.
    dict(a=200.0, p_start=1.0, p_end=0.97, top_k=37),
    dict(a=200.0, eps=0.5, p_start=0.0, p_end=1.0, top_k=7),
    dict(a=10.0, top_k=1),
    dict(a=10.0, top_k=120),  # top_k = N.
])
def test_soft_wpmi_extreme_q_matches_float64(hyper):
  a, p = _extreme_inputs()
  hyper = {"top_k": 20, **hyper}
  alpha = hyper.pop("a")
  got = similarity.soft_wpmi(a, p, a=alpha, **hyper)
  want = refs.ref_soft_wpmi(a, p, alpha=alpha, **hyper)
  # L sums top_k logs of up to ~6 each: float32 keeps it to ~1e-7 of |L|.
  np.testing.assert_allclose(got, want, rtol=RTOL,
                             atol=max(ATOL, 2e-6 * hyper["top_k"]))
  np.testing.assert_array_equal(np.argmax(got, 1), np.argmax(want, 1))


@pytest.mark.parametrize("hyper", [
    dict(a=200.0),  # Q + eps = eps for most factors: eps^5 is normal.
    dict(a=200.0, eps=1e-3),
    dict(a=200.0, eps=0.5, top_k=17),  # Large eps: blocks of 16.
    dict(a=2.0, top_k=3),  # top_k below the block size.
])
def test_wpmi_extreme_q_matches_float64(hyper):
  a, p = _extreme_inputs(seed=1)
  hyper = {"top_k": 28, **hyper}
  alpha = hyper.pop("a")
  got = similarity.wpmi(a, p, a=alpha, **hyper)
  want = refs.ref_wpmi(a, p, alpha=alpha, **hyper)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_eps_below_the_bound_is_rejected():
  a, p = _extreme_inputs()
  for fn in (similarity.soft_wpmi, similarity.wpmi):
    with pytest.raises(ValueError, match="eps"):
      fn(a, p, eps=1e-8)


@pytest.mark.parametrize("name,ref", [("soft_wpmi", refs.ref_soft_wpmi),
                                      ("wpmi", refs.ref_wpmi)])
@pytest.mark.parametrize("m", [37, 48, 5])  # Tiles 16: rest 5, none, < 1.
def test_concept_tiles(monkeypatch, name, ref, m):
  # Tiles of 16 concepts (the default is >= 128): full tiles, a narrower
  # last tile, and M below one tile.
  monkeypatch.setattr(kernels, "_MIN_Q_TILE", 16)
  monkeypatch.setattr(kernels, "_Q_TILE_BYTES", 0)
  monkeypatch.setattr(compute_lib, "_PLAN_CACHE", {})
  a, p = refs.random_inputs(90, 7, m, seed=m)
  top_k = 28 if name == "wpmi" else 90
  got = similarity.compute(name, a, p, devices=1, top_k=top_k,
                           chunk_size=3)
  np.testing.assert_allclose(got, ref(a, p, top_k=top_k), rtol=RTOL,
                             atol=ATOL)


def test_tile_width():
  # ~_Q_TILE_BYTES per tile, a multiple of 128, never above M.
  assert kernels._q_tile_width(5000, 20000) % 128 == 0  # pylint: disable=protected-access
  assert kernels._q_tile_width(100, 50) == 50  # pylint: disable=protected-access
  assert kernels._q_tile_width(10**6, 20000) == 128  # pylint: disable=protected-access
  width = kernels._q_tile_width(1000, 10**6)  # pylint: disable=protected-access
  assert width * 4 * 1000 <= kernels._Q_TILE_BYTES  # pylint: disable=protected-access


def test_prior_matches_logsumexp_with_masked_neurons():
  rng = np.random.default_rng(0)
  ll = rng.normal(size=(37, 23)).astype(np.float32) * 50 - 600
  valid = np.arange(37) < 30
  got = kernels.log_prior(ll, num_neurons=30, valid=valid)
  x = ll[:30].astype(np.float64)
  top = x.max(0)
  want = top + np.log(np.exp(x - top).sum(0)) - math.log(30)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  # No valid neuron in a block (sharded padding): -inf, not NaN.
  none = kernels.log_prior(ll[:5], num_neurons=30,
                              valid=np.zeros(5, bool))
  assert np.all(np.isneginf(np.asarray(none)))


@pytest.mark.parametrize("where", [(0, 0), (17, 3), (-1, -1)])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_anywhere_is_found(where, bad):
  a, p = refs.random_inputs(40, 3, 33)
  p[where] = bad
  with pytest.raises(ValueError, match="1 NaN or inf"):
    similarity.validate_inputs(a, p)
