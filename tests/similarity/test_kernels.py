"""Kernels against per-neuron numpy implementations of docs/design.md's
formulas."""

import jax
import numpy as np
import pytest

from jax_dissect import similarity
from jax_dissect.similarity import kernels
from jax_dissect.similarity import runner as compute_lib
from tests.helpers import numpy_kernels

RTOL, ATOL = 1e-5, 1e-4


# ----------------------------------------------------------------------------
# Equivalence.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_soft_wpmi_matches_reference(chunk_size):
  a, p = numpy_kernels.random_inputs(150, 11, 37)
  got = similarity.soft_wpmi(a, p, chunk_size=chunk_size)
  np.testing.assert_allclose(got, numpy_kernels.ref_soft_wpmi(a, p), rtol=RTOL, atol=ATOL)


def test_soft_wpmi_hyperparameters():
  a, p = numpy_kernels.random_inputs(60, 7, 20, seed=1)
  kw = dict(top_k=13, lam=0.5, p_start=0.9, p_end=0.5, eps=1e-5)
  got = similarity.soft_wpmi(a, p, a=4.0, **kw)
  np.testing.assert_allclose(got, numpy_kernels.ref_soft_wpmi(a, p, alpha=4.0, **kw),
                             rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("chunk_size", [None, 4])
def test_wpmi_matches_reference(chunk_size):
  a, p = numpy_kernels.random_inputs(120, 9, 25, seed=2)
  got = similarity.wpmi(a, p, chunk_size=chunk_size)
  np.testing.assert_allclose(got, numpy_kernels.ref_wpmi(a, p), rtol=RTOL, atol=ATOL)
  got = similarity.wpmi(a, p, top_k=5, a=3.0, lam=1.0)
  np.testing.assert_allclose(got, numpy_kernels.ref_wpmi(a, p, 5, 3.0, 1.0), rtol=RTOL,
                             atol=ATOL)


@pytest.mark.parametrize("n", [80, 37, 6])  # Full 16-row blocks or not.
def test_cos_similarity_matches_reference(n):
  a, p = numpy_kernels.random_inputs(n, 6, 15, seed=3)
  np.testing.assert_allclose(similarity.cos_similarity(a, p, chunk_size=4),
                             numpy_kernels.ref_cos(a, p), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("n", [80, 5])
def test_cos_similarity_cubed_matches_reference(n):
  a, p = numpy_kernels.random_inputs(n, 6, 15, seed=4)
  np.testing.assert_allclose(similarity.cos_similarity_cubed(a, p),
                             numpy_kernels.ref_cos_cubed(a, p), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(
      similarity.cos_similarity_cubed(a, p, min_norm=0.5),
      numpy_kernels.ref_cos_cubed(a, p, min_norm=0.5), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("m", [256, 300])  # Whole blocks of 128, or not.
def test_cos_similarity_cubed_by_concept_blocks(monkeypatch, m):
  # The scores make P's centred cube 128 concepts at a time here (the
  # smallest block); shapes no other test uses, so the plan is new.
  monkeypatch.setattr(kernels, "_CUBED_BLOCK_BYTES", 1)
  assert kernels._cubed_block_width(41, m) == 128
  a, p = numpy_kernels.random_inputs(41, 9, m, seed=14)
  np.testing.assert_allclose(
      similarity.cos_similarity_cubed(a, p, chunk_size=4),
      numpy_kernels.ref_cos_cubed(a, p), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("k, chunk_size, expected", [
    (10, 6, 5), (10, 10, 10), (11, 3, 3), (2048, 1677, 1024), (7, 1, 1)])
def test_neuron_chunks_are_equal_and_pad_little(k, chunk_size, expected):
  seen = []

  def fn(x, ids):
    seen.append(x.shape[0])
    return x * 2.0 + ids[:, None]

  a = np.arange(3 * k, dtype=np.float32).reshape(3, k)
  out = kernels.map_neuron_chunks(fn, jax.numpy.asarray(a), chunk_size)
  assert seen == [expected]  # Traced once, for the chunk shape.
  np.testing.assert_array_equal(out, a.T * 2.0 + np.arange(k)[:, None])


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_rank_reorder_matches_reference(chunk_size):
  a, p = numpy_kernels.random_inputs(200, 5, 12, seed=5)
  key = jax.random.key(7)
  got = similarity.rank_reorder(a, p, key=key, chunk_size=chunk_size)
  perms = np.asarray(similarity.rank_reorder_permutations(
      key, np.arange(5), 10))
  np.testing.assert_allclose(got, numpy_kernels.ref_rank_reorder(a, p, perms), rtol=RTOL,
                             atol=ATOL)
  got = similarity.rank_reorder(a, p, key=key, top_fraction=0.1, p=2.0,
                                scale_p=1.0)
  perms = np.asarray(similarity.rank_reorder_permutations(
      key, np.arange(5), 20))
  np.testing.assert_allclose(
      got, numpy_kernels.ref_rank_reorder(a, p, perms, 0.1, 2.0, 1.0), rtol=RTOL, atol=ATOL)


def test_numpy_argsort_is_jax_stable_argsort():
  """rank_reorder's CPU sort gives jnp.argsort's order exactly: ties keep
  their positions (-0.0, 0.0 and subnormals are equal: XLA:CPU flushes
  subnormals), infinities, the largest and smallest normal values."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 40, 17)).astype(np.float32)
  x[:, ::3] = np.round(x[:, ::3])  # Many ties.
  x[0, :6, 0] = [0.0, -0.0, 0.0, -0.0, np.inf, -np.inf]
  x[1, :6, 1] = [1e-45, -1e-45, 3e38, -3e38, 1.2e-38, -1.2e-38]
  want = np.asarray(jax.numpy.argsort(x, axis=1))
  np.testing.assert_array_equal(kernels._numpy_stable_argsort(x), want)
  # The batched form vmap hands the callback (an extra leading axis).
  np.testing.assert_array_equal(kernels._numpy_stable_argsort(x[None]),
                                want[None])
  jitted = jax.jit(kernels._stable_argsort_rows)(x)
  np.testing.assert_array_equal(np.asarray(jitted), want)
  vmapped = jax.vmap(kernels._stable_argsort_rows)(x[:, None])
  np.testing.assert_array_equal(np.asarray(vmapped)[:, 0], want)


def test_rank_reorder_with_ties_matches_xlas_sort(monkeypatch):
  """The numpy sort and XLA's give the same scores, bit for bit, on P with
  many equal values (where the order of equals decides the errors)."""
  a, p = numpy_kernels.random_inputs(300, 6, 9, seed=11)
  p = np.round(p * 4) / 4  # Ties in P.
  key = jax.random.key(3)
  got = np.asarray(similarity.rank_reorder(a, p, key=key, top_fraction=0.1))
  monkeypatch.setattr(kernels, "_stable_argsort_rows",
                      lambda x: jax.numpy.argsort(x, axis=1))
  jax.clear_caches()
  want = np.asarray(similarity.rank_reorder(a, p, key=key, top_fraction=0.1))
  jax.clear_caches()
  np.testing.assert_array_equal(got, want)


def test_rank_reorder_permutations_are_permutations_and_seeded():
  key = jax.random.key(0)
  perms = np.asarray(similarity.rank_reorder_permutations(
      key, np.arange(4), 9))
  assert perms.shape == (4, kernels.NUM_BASELINE_PERMUTATIONS, 9)
  for row in perms.reshape(-1, 9):
    assert sorted(row) == list(range(9))
  again = similarity.rank_reorder_permutations(key, np.arange(4), 9)
  np.testing.assert_array_equal(perms, again)
  other = similarity.rank_reorder_permutations(jax.random.key(1),
                                               np.arange(4), 9)
  assert not np.array_equal(perms, other)


def test_registry_names_and_numpy_or_jax_input():
  assert similarity.names() == [
      "soft_wpmi", "wpmi", "cos_similarity", "cos_similarity_cubed",
      "rank_reorder"]
  a, p = numpy_kernels.random_inputs(40, 3, 6)
  out = similarity.compute("wpmi", jax.numpy.asarray(a), p, top_k=5)
  assert isinstance(out, jax.Array)
  assert out.shape == (3, 6) and out.dtype == np.float32


def test_registry_facts_come_from_the_planners():
  soft = similarity.get_kernel("soft_wpmi")
  assert soft.defaults == {"top_k": 100, "a": 10.0, "lam": 1.0,
                           "p_start": 0.998, "p_end": 0.97, "eps": 1e-7}
  assert soft.uses_top_k and not soft.uses_key
  assert similarity.get_kernel("wpmi").defaults["top_k"] == 28
  rr = similarity.get_kernel("rank_reorder")
  assert rr.uses_key and not rr.uses_top_k and "key" not in rr.defaults
  assert not similarity.get_kernel("cos_similarity").defaults


def test_compute_fits_top_k_and_key_like_describe_neurons():
  a, p = numpy_kernels.random_inputs(20, 3, 4)
  # top_k=100 > N=20 is lowered to 20 (as describe_neurons does) ...
  np.testing.assert_array_equal(
      similarity.compute("soft_wpmi", a, p, devices=1),
      similarity.soft_wpmi(a, p, top_k=20))
  # ... and the seed makes rank_reorder's key.
  a, p = numpy_kernels.random_inputs(100, 3, 4)
  np.testing.assert_array_equal(
      similarity.compute("rank_reorder", a, p, seed=5, devices=1),
      similarity.rank_reorder(a, p, key=jax.random.key(5)))
  hyper = similarity.fit_hyper("wpmi", 10, {"top_k": 50})
  assert hyper == {"top_k": 10}


# ----------------------------------------------------------------------------
# Bad input and degenerate neurons.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", similarity.names())
def test_dead_neurons_give_finite_scores(name):
  a, p = numpy_kernels.random_inputs(100, 4, 9)
  a[:, 1] = 0.0
  a[:, 2] = 3.5
  kw = {"key": jax.random.key(0)} if name == "rank_reorder" else {}
  if name in ("soft_wpmi", "wpmi"):
    kw["top_k"] = 10
  out = np.asarray(similarity.compute(name, a, p, devices=1, **kw))
  assert np.isfinite(out).all()


@pytest.mark.parametrize("a_shape,p_shape,match", [
    ((10, 3), (11, 4), "10 images.*11"),
    ((10,), (10, 4), "activations must be 2-D"),
    ((10, 3, 2), (10, 4), "activations must be 2-D"),
    ((10, 3), (10,), "concept_activations must be 2-D"),
    ((0, 3), (0, 4), "activations is empty"),
    ((10, 0), (10, 4), "activations is empty"),
    ((10, 3), (10, 1), "at least 2 concepts"),
])
def test_bad_shapes(a_shape, p_shape, match):
  with pytest.raises(ValueError, match=match):
    similarity.cos_similarity(np.ones(a_shape), np.ones(p_shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("which", ["activations", "concept_activations"])
def test_nonfinite_values(bad, which):
  a, p = numpy_kernels.random_inputs(20, 3, 4)
  (a if which == "activations" else p)[3, 1] = bad
  with pytest.raises(ValueError, match=f"{which} contains 1 NaN or inf"):
    similarity.soft_wpmi(a, p, top_k=5)


def test_top_k_larger_than_n():
  a, p = numpy_kernels.random_inputs(20, 3, 4)
  with pytest.raises(ValueError, match="top_k=100 .* N=20"):
    similarity.soft_wpmi(a, p)
  with pytest.raises(ValueError, match="top_k=21 .* N=20"):
    similarity.wpmi(a, p, top_k=21)


def test_other_bad_arguments():
  a, p = numpy_kernels.random_inputs(20, 3, 4)
  with pytest.raises(ValueError, match="needs key"):
    similarity.rank_reorder(a, p, key=None)
  with pytest.raises(ValueError, match="need at least 2"):
    similarity.rank_reorder(a, p, key=jax.random.key(0))
  with pytest.raises(ValueError, match="chunk_size"):
    similarity.cos_similarity(a, p, chunk_size=0)
  with pytest.raises(ValueError, match="numeric"):
    similarity.cos_similarity(np.array([["a", "b"]]), p)
  with pytest.raises(ValueError, match="unknown similarity function 'nope'"):
    similarity.compute("nope", a, p)
  with pytest.raises(ValueError, match="soft_wpmi has no hyper-parameter"):
    similarity.soft_wpmi(a, p, top_k=5, temperature=2)


# ----------------------------------------------------------------------------
# Best concepts.
# ----------------------------------------------------------------------------


def test_top_concepts():
  s = np.array([[0.1, 0.9, 0.5, 0.3], [0.8, 0.2, 0.1, 0.0]], np.float32)
  vals, idx = similarity.top_concepts(s, 3)
  np.testing.assert_array_equal(idx, [[1, 2, 3], [0, 1, 2]])
  np.testing.assert_allclose(vals[:, 0], [0.9, 0.8])
  assert similarity.top_concepts(s, 10)[1].shape == (2, 4)
  with pytest.raises(ValueError, match="positive int"):
    similarity.top_concepts(s, 0)


def test_new_rank_reorder_key_does_not_recompile():
  a, p = numpy_kernels.random_inputs(100, 4, 7, seed=9)
  first = similarity.rank_reorder(a, p, key=jax.random.key(1))
  compiled = compute_lib._run_plan._cache_size()  # pylint: disable=protected-access
  second = similarity.rank_reorder(a, p, key=jax.random.key(2))
  assert compute_lib._run_plan._cache_size() == compiled  # pylint: disable=protected-access
  assert not np.allclose(first, second)  # Other baseline permutations.
  np.testing.assert_array_equal(
      first, similarity.rank_reorder(a, p, key=jax.random.key(1)))


def test_numpy_inputs_are_used_in_place_when_aligned(tmp_path):
  """A memory-mapped float32 .npy (what the cache hands the kernels) is not
  copied on the CPU; other numpy arrays are copied once, to float32; the
  scores are the same either way."""
  a, p = numpy_kernels.random_inputs(50, 6, 9)
  np.save(tmp_path / "p.npy", p)
  mapped = np.load(tmp_path / "p.npy", mmap_mode="r")
  assert mapped.ctypes.data % 64 == 0
  shared = kernels.host_to_device(mapped)
  if jax.default_backend() == "cpu":
    assert shared.unsafe_buffer_pointer() == mapped.ctypes.data
  unaligned = np.empty(p.size + 1, np.float32)[1:].reshape(p.shape)
  unaligned[...] = p
  copied = kernels.host_to_device(unaligned)
  assert copied.unsafe_buffer_pointer() != unaligned.ctypes.data
  wide = kernels.host_to_device(p.astype(np.float64)[:, ::1])
  assert wide.dtype == np.float32
  for x in (shared, copied, wide):
    np.testing.assert_array_equal(np.asarray(x), p)
  want = similarity.compute("soft_wpmi", a, p, devices=1, top_k=10)
  got = similarity.compute("soft_wpmi", a, mapped, devices=1, top_k=10)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_large_numpy_inputs_are_copied_by_threads_exactly(monkeypatch):
  """Above _PARALLEL_COPY_BYTES the aligned copy is made by threads in
  blocks of rows (here forced for a small array, with a last short block
  and a float64 source); the result is the array itself."""
  monkeypatch.setattr(kernels, "_PARALLEL_COPY_BYTES", 0)
  rng = np.random.default_rng(3)
  for x in (rng.random((37, 11), np.float32)[:, ::1],
            rng.random((5, 3)), rng.random((1, 4), np.float32)):
    unaligned = np.empty(x.size + 1, x.dtype)[1:].reshape(x.shape)
    unaligned[...] = x
    np.testing.assert_array_equal(
        np.asarray(kernels.host_to_device(unaligned)), x.astype(np.float32))


@pytest.mark.parametrize("hyper", [{"a": float("nan")}, {"lam": float("inf")},
                                   {"p_start": -float("inf")}])
def test_non_finite_hyper_parameters_are_refused(hyper):
  """Issue 25: a=nan gave NaN for every score and one label for all."""
  a = np.random.default_rng(0).random((20, 3), np.float32)
  p = np.random.default_rng(1).random((20, 4), np.float32)
  with pytest.raises(ValueError, match="must be a finite number"):
    similarity.compute("soft_wpmi", a, p, top_k=5, **hyper)
