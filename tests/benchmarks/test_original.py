"""The original-style PyTorch comparators compute jax_dissect's S.

The similarity benchmark races jax_dissect against these loops; the race is
fair only if both compute the same S, checked here on small inputs (and
both against the float64 references of test_similarity).
"""

import jax
import numpy as np
import pytest

from jax_dissect import similarity
from tests.helpers import numpy_kernels as refs
from torch_reference import original

pytest.importorskip("torch", reason="torch extra not installed")

RTOL = 1e-5
# (soft_)wpmi's L sums top_k logs (|L| up to ~600 here, float32 ulp 6e-5);
# both programs round differently (the original computes 1 + p (Q - 1)),
# so they agree to a few ulps of |L|. The cos kernels are O(1).
ATOL = {"soft_wpmi": 2e-4, "wpmi": 1e-4, "cos_similarity": 2e-6,
        "cos_similarity_cubed": 2e-6}
REFERENCES = {"soft_wpmi": refs.ref_soft_wpmi, "wpmi": refs.ref_wpmi,
              "cos_similarity": refs.ref_cos,
              "cos_similarity_cubed": refs.ref_cos_cubed}


@pytest.mark.parametrize("name", sorted(ATOL))
@pytest.mark.parametrize("seed", [0, 1])
def test_same_s_as_jax_dissect(name, seed):
  a, p = refs.random_inputs(150, 11, 37, seed=seed)
  got = original.FUNCTIONS[name](a, p).numpy()
  assert got.shape == (11, 37) and got.dtype == np.float32
  want = np.asarray(similarity.compute(name, a, p, devices=1))
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL[name])
  np.testing.assert_allclose(got, REFERENCES[name](a, p), rtol=RTOL,
                             atol=ATOL[name])
  np.testing.assert_array_equal(got.argmax(axis=1), want.argmax(axis=1))


def test_hyperparameters_reach_the_formula():
  a, p = refs.random_inputs(60, 7, 20, seed=1)
  kw = dict(top_k=13, lam=0.5, p_start=0.9, p_end=0.5, eps=1e-5)
  np.testing.assert_allclose(
      original.soft_wpmi(a, p, a=4.0, **kw).numpy(),
      similarity.soft_wpmi(a, p, a=4.0, **kw), rtol=RTOL, atol=1e-4)
  np.testing.assert_allclose(
      original.wpmi(a, p, top_k=5, a=3.0, lam=1.0).numpy(),
      similarity.wpmi(a, p, top_k=5, a=3.0, lam=1.0), rtol=RTOL, atol=1e-4)
  np.testing.assert_allclose(
      original.cos_similarity_cubed(a, p, min_norm=0.5).numpy(),
      similarity.cos_similarity_cubed(a, p, min_norm=0.5), rtol=RTOL,
      atol=1e-6)


@pytest.mark.parametrize("top_fraction,power,scale_p",
                         [(0.05, 3.0, 0.5), (0.1, 2.0, 1.0)])
def test_rank_reorder_same_s_with_the_same_permutations(top_fraction, power,
                                                        scale_p):
  a, p = refs.random_inputs(200, 5, 12, seed=5)
  key = jax.random.key(7)
  n = int(200 * top_fraction)
  perms = np.asarray(similarity.rank_reorder_permutations(
      key, np.arange(5), n))
  got = original.rank_reorder(a, p, permutations=perms,
                              top_fraction=top_fraction, p=power,
                              scale_p=scale_p).numpy()
  want = similarity.rank_reorder(a, p, key=key, top_fraction=top_fraction,
                                 p=power, scale_p=scale_p)
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-5)


def test_blocks_of_the_cos_loop(monkeypatch):
  # More neurons and concepts than one block: the block loop is exercised.
  monkeypatch.setattr(original, "COS_BLOCK", 4)
  monkeypatch.setattr(original, "RANK_REORDER_CONCEPT_BLOCK", 5)
  a, p = refs.random_inputs(80, 9, 11, seed=3)
  np.testing.assert_allclose(original.cos_similarity(a, p).numpy(),
                             similarity.cos_similarity(a, p), rtol=RTOL,
                             atol=2e-6)
  key = jax.random.key(0)
  perms = np.asarray(similarity.rank_reorder_permutations(
      key, np.arange(9), 4))
  np.testing.assert_allclose(
      original.rank_reorder(a, p, permutations=perms).numpy(),
      similarity.rank_reorder(a, p, key=key), rtol=RTOL, atol=1e-5)


def test_dead_neuron_matches():
  a, p = refs.random_inputs(40, 4, 9, seed=2)
  a[:, 1] = 0.0
  for name in ("cos_similarity", "cos_similarity_cubed"):
    got = original.FUNCTIONS[name](a, p).numpy()
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, similarity.compute(name, a, p, devices=1),
                               rtol=RTOL, atol=2e-6)
