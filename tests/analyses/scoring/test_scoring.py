"""Simulation scores, presence, split, label p-values and q-values.

References are written here in numpy, straight from the definitions in the
docstrings of jax_dissect.analyses.scoring.simulation and
jax_dissect.analyses.scoring.significance.
"""

import math

import numpy as np
import pytest
from scipy import stats

from jax_dissect import similarity
from jax_dissect.analyses.scoring import significance
from jax_dissect.analyses.scoring import simulation as scoring

NUM_PERMUTATIONS = 99
NOISE_LEVELS = (0.25, 0.5, 1.0)
PER_LEVEL = 20
NUM_NOISE = 300


# ----------------------------------------------------------------------------
# A planted layer: neurons that follow one P column plus noise, and noise.
# ----------------------------------------------------------------------------


def _concept_activations(rng, n, m):
  return (0.22 + 0.03 * rng.standard_normal((n, m))).astype(np.float32)


@pytest.fixture(scope="module")
def layer():
  rng = np.random.default_rng(0)
  n, m = 600, 80
  p = _concept_activations(rng, n, m)
  z = (p - p.mean(0)) / p.std(0)
  # One planted neuron per concept: soft_wpmi's prior lowers the score of a
  # concept that several neurons share (by log 2 for two at lam = 1).
  concepts = rng.choice(m, PER_LEVEL * len(NOISE_LEVELS), replace=False)
  levels = np.repeat(NOISE_LEVELS, PER_LEVEL)
  planted = z[:, concepts] + levels * rng.standard_normal(
      (n, len(concepts)))
  noise = rng.standard_normal((n, NUM_NOISE))
  a = np.concatenate([planted, noise], axis=1).astype(np.float32)
  return {"a": a, "p": p, "concepts": concepts, "levels": levels,
          "num_planted": len(concepts)}


@pytest.fixture(scope="module")
def pvalues(layer):
  """label_pvalues of the planted layer for the kernels tested below."""
  out = {}
  for name in ("soft_wpmi", "wpmi", "cos_similarity"):
    out[name] = scoring.label_pvalues(layer["a"], layer["p"], name,
                                      num_permutations=NUM_PERMUTATIONS,
                                      seed=1)
  return out


def _assert_uniform(p_values, num_permutations, alpha=1e-3):
  """KS test of uniformity for permutation p-values on {1..B+1}/(B+1).

  p - U/(B+1), U ~ Uniform(0, 1), is exactly Uniform(0, 1) when p is
  uniform on that grid, so a continuous KS test applies.
  """
  u = np.random.default_rng(123).uniform(size=len(p_values))
  res = stats.kstest(np.asarray(p_values) - u / (num_permutations + 1),
                     "uniform")
  assert res.pvalue > alpha, f"p-values not uniform: KS p={res.pvalue:.2e}"


# ----------------------------------------------------------------------------
# Label p-values.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi", "cos_similarity"])
def test_planted_neurons_get_their_concept_and_small_pvalues(
    layer, pvalues, name):
  res = pvalues[name]
  k = layer["num_planted"]
  assert res.pooled == (name != "cos_similarity")
  assert res.null_scores.shape == (layer["a"].shape[1], NUM_PERMUTATIONS)
  for level in NOISE_LEVELS[:2]:
    sel = layer["levels"] == level
    np.testing.assert_array_equal(res.labels[:k][sel],
                                  layer["concepts"][sel])
    # Every null draw is below the observed score: the smallest p-value.
    np.testing.assert_allclose(res.p_values[:k][sel],
                               1 / (NUM_PERMUTATIONS + 1))
    # With B = 99 and 360 neurons, q >= 0.01 * 360 / #(p = 0.01).
    assert np.all(res.q_values[:k][sel] == res.q_values.min())
    assert np.all(res.q_values[:k][sel] < 0.1)
  noisiest = layer["levels"] == NOISE_LEVELS[-1]
  assert np.mean(res.labels[:k][noisiest] ==
                 layer["concepts"][noisiest]) >= 0.75
  assert np.median(res.p_values[:k][noisiest]) <= 0.05


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi", "cos_similarity"])
def test_noise_neurons_get_uniform_pvalues(layer, pvalues, name):
  p = pvalues[name].p_values[layer["num_planted"]:]
  _assert_uniform(p, NUM_PERMUTATIONS)


def test_uniformity_check_fails_biased_nulls(layer, pvalues):
  # A null that keeps the image pairing: every null score is the observed
  # one, p = 1.
  with pytest.raises(AssertionError, match="not uniform"):
    _assert_uniform(np.ones(NUM_NOISE), NUM_PERMUTATIONS)
  # The layer-wide permutation with soft_wpmi: the real layer prior, shaped
  # by the planted neurons, differs from the null priors, so noise neurons'
  # p-values are biased (here towards 1) although each null re-run is exact.
  layer_null = scoring.label_pvalues(layer["a"], layer["p"], "soft_wpmi",
                                     num_permutations=NUM_PERMUTATIONS,
                                     seed=1, null="layer")
  assert not layer_null.pooled
  noise = layer_null.p_values[layer["num_planted"]:]
  with pytest.raises(AssertionError, match="not uniform"):
    _assert_uniform(noise, NUM_PERMUTATIONS)
  # The default (per-neuron) null on the same layer passes.
  _assert_uniform(pvalues["soft_wpmi"].p_values[layer["num_planted"]:],
                  NUM_PERMUTATIONS)


def _standardized_max(a_col, p, res, name="soft_wpmi"):
  """max_m Z of one neuron: its L (the kernel with lam=0) standardized by
  the reference moments of a label_pvalues result."""
  ll = np.asarray(similarity.compute(name, a_col[:, None], p, devices=1,
                                     lam=0.0))[0]
  z = (ll - res.reference_mean) / res.reference_std
  return float(np.max(z))


def test_null_breaks_the_image_pairing(layer, pvalues):
  """Default null: null scores follow Z re-run with the column permuted."""
  res = pvalues["soft_wpmi"]
  assert res.statistic == "standardized"
  a, p = layer["a"], layer["p"]
  planted, noise = 0, layer["num_planted"]
  rng = np.random.default_rng(7)
  for k in (planted, noise):
    brute = [_standardized_max(a[rng.permutation(a.shape[0]), k], p, res)
             for _ in range(100)]
    two_sample = stats.ks_2samp(res.null_scores[k], brute)
    assert two_sample.pvalue > 1e-3, (k, two_sample)
    # The observed statistic is the same function of the unpermuted column.
    assert res.scores[k] == pytest.approx(_standardized_max(a[:, k], p, res),
                                          abs=1e-3)
  # Unpermuted, the null would equal the observed score (p = 1).
  assert np.all(res.null_scores[planted] < res.scores[planted])


def test_reference_moments_match_random_top_k_lists(layer, pvalues):
  """Z's mean and std are those of L for uniformly random top_k lists."""
  res = pvalues["soft_wpmi"]
  a, p = layer["a"], layer["p"]
  rng = np.random.default_rng(8)
  rows = np.stack([rng.permutation(a.shape[0]) for _ in range(400)], 1)
  ll = np.asarray(similarity.compute("soft_wpmi", rows.astype(np.float32),
                                     p, devices=1, lam=0.0))
  std = ll.std(0, ddof=1)
  # 1024 reference rows against 400 here: a few percent of std apart.
  np.testing.assert_allclose(res.reference_mean, ll.mean(0),
                             atol=0.25 * float(np.mean(std)))
  np.testing.assert_allclose(res.reference_std, std, rtol=0.2)


def test_neuron_in_layer_null_breaks_the_image_pairing(layer):
  """null="neuron_in_layer": null scores follow the kernel (with the layer
  prior of the other neurons) re-run with the column permuted."""
  a, p = layer["a"], layer["p"]
  res = scoring.label_pvalues(a, p, "soft_wpmi",
                              num_permutations=NUM_PERMUTATIONS, seed=1,
                              null="neuron_in_layer")
  assert res.pooled and res.statistic == "kernel"
  assert res.reference_mean is None
  s = np.asarray(similarity.soft_wpmi(a, p))
  np.testing.assert_array_equal(res.labels, np.argmax(s, 1))
  planted, noise = 0, layer["num_planted"]
  rng = np.random.default_rng(7)
  for k in (planted, noise):
    brute = []
    for _ in range(100):
      a2 = a.copy()
      a2[:, k] = a[rng.permutation(a.shape[0]), k]
      brute.append(float(np.max(similarity.soft_wpmi(a2, p)[k])))
    two_sample = stats.ks_2samp(res.null_scores[k], brute)
    assert two_sample.pvalue > 1e-3, (k, two_sample)
  assert np.all(res.null_scores[planted] < res.scores[planted])


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi"])
def test_ties_are_broken_at_random(name):
  """ReLU neurons that are 0 on most images, images in class order.

  As in an ImageFolder: the kernel's top_k fills a neuron's top images with
  the first zero images, all of the first class, so the likelihood L names
  that class for neurons that are random. The default null orders ties at
  random, as its null draws do, and their p-values stay uniform.
  """
  rng = np.random.default_rng(4)
  n, m, k = 400, 20, 200
  p = _concept_activations(rng, n, m)
  p[:100, 0] += 0.1  # The first 100 images show concept 0.
  a = np.zeros((n, k), np.float32)
  for j in range(k):
    on = rng.choice(n, 20, replace=False)  # Fewer than either top_k.
    a[on, j] = rng.exponential(size=20)
  ll = np.asarray(similarity.compute(name, a, p, devices=1, lam=0.0))
  assert np.mean(np.argmax(ll, 1) == 0) > 0.9
  res = scoring.label_pvalues(a, p, name, num_permutations=NUM_PERMUTATIONS,
                              seed=2)
  _assert_uniform(res.p_values, NUM_PERMUTATIONS)


@pytest.mark.parametrize("name,kwargs", [("soft_wpmi", {}), ("wpmi", {}),
                                         ("soft_wpmi", {"lam": 0.5}),
                                         ("wpmi", {"lam": 0.0})])
def test_null_score_formula_equals_kernel_rerun(layer, name, kwargs):
  """The pooled null's prior treatment is exact for one permuted column."""
  a, p = layer["a"][:, :80], layer["p"]
  num_neurons = a.shape[1]
  lam = kwargs.get("lam", {"soft_wpmi": 1.0, "wpmi": 0.6}[name])
  # lam=0 makes S the likelihood L before the prior.
  ll = np.asarray(similarity.compute(name, a, p, devices=1,
                                     **{**kwargs, "lam": 0.0}))
  loo = significance.leave_one_out_logsumexp(ll)
  rng = np.random.default_rng(3)
  for k in (0, 70):
    a2 = a.copy()
    a2[:, k] = a[rng.permutation(a.shape[0]), k]
    rerun = np.max(np.asarray(similarity.compute(name, a2, p, devices=1,
                                                 **kwargs))[k])
    x = np.asarray(similarity.compute(name, a2[:, [k]], p, devices=1,
                                      **{**kwargs, "lam": 0.0}))[0]
    formula = float(significance.null_best_score(x, loo[k], lam,
                                                 num_neurons))
    np.testing.assert_allclose(formula, rerun, rtol=2e-6, atol=2e-4)


def test_leave_one_out_logsumexp_against_numpy():
  rng = np.random.default_rng(0)
  ll = rng.normal(-400, 3, size=(6, 5)).astype(np.float32)
  ll[2, 1] += 150  # One neuron dominates concept 1.
  ll[4, 3] = ll[1, 3]  # A tie for the maximum.
  got = np.asarray(significance.leave_one_out_logsumexp(ll))
  ll64 = ll.astype(np.float64)
  for k in range(6):
    rest = np.delete(ll64, k, axis=0)
    mx = rest.max(0)
    want = mx + np.log(np.exp(rest - mx).sum(0))
    np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-3)
  one = np.asarray(significance.leave_one_out_logsumexp(ll[:1]))
  assert np.all(one == -np.inf)


def test_constant_neuron_and_rank_reorder():
  rng = np.random.default_rng(2)
  p = _concept_activations(rng, 400, 10)
  a = np.concatenate([(p[:, [3]] - 0.22) / 0.03 +
                      0.1 * rng.standard_normal((400, 1)),
                      np.full((400, 1), 0.5),  # Constant over images.
                      rng.standard_normal((400, 3))], 1).astype(np.float32)
  one = scoring.label_pvalues(a, p, "rank_reorder", num_permutations=19,
                              seed=4)
  assert one.labels[0] == 3 and one.p_values[0] == pytest.approx(1 / 20)
  assert one.p_values[1] == 1.0
  again = scoring.label_pvalues(a, p, "rank_reorder", num_permutations=19,
                                seed=4)
  np.testing.assert_array_equal(one.null_scores, again.null_scores)
  pooled = scoring.label_pvalues(a, p, "soft_wpmi", num_permutations=19,
                                 kernel_kwargs={"top_k": 20})
  assert pooled.pooled and pooled.p_values[1] == 1.0
  assert pooled.labels[0] == 3 and pooled.p_values[0] == pytest.approx(1 / 20)


def test_given_labels_and_seeds(layer):
  a, p = layer["a"][:, :40], layer["p"]
  base = scoring.label_pvalues(a, p, "wpmi", num_permutations=19, seed=5)
  same = scoring.label_pvalues(a, p, "wpmi", num_permutations=19, seed=5,
                               labels=base.labels)
  np.testing.assert_array_equal(base.p_values, same.p_values)
  wrong = (base.labels + 1) % p.shape[1]
  worse = scoring.label_pvalues(a, p, "wpmi", num_permutations=19, seed=5,
                                labels=wrong)
  assert np.all(worse.scores <= base.scores)
  assert np.all(worse.p_values >= base.p_values)
  other = scoring.label_pvalues(a, p, "wpmi", num_permutations=19, seed=6)
  assert not np.array_equal(base.null_scores, other.null_scores)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_permutations": 0}, "num_permutations must be an int >= 1"),
    ({"num_permutations": -3}, "num_permutations must be an int >= 1"),
    ({"num_permutations": 2.5}, "num_permutations must be an int >= 1"),
    ({"num_permutations": True}, "num_permutations must be an int >= 1"),
    ({"similarity_fn": "cosine"}, "unknown similarity function 'cosine'"),
    ({"null": "global"}, "unknown null 'global'"),
    ({"pool_size": 5}, "pool_size=5 must be >= num_permutations=10"),
    ({"reference_size": 1}, "reference_size=1 must be >= 2"),
    ({"reference_size": 0}, "reference_size must be an int >= 1"),
    ({"labels": np.zeros(3, int)}, r"labels must be \(4,\) ints"),
    ({"kernel_kwargs": {"top_q": 3}},
     r"soft_wpmi has no hyper-parameter\(s\) \['top_q'\]"),
])
def test_label_pvalues_bad_input(kwargs, match):
  rng = np.random.default_rng(0)
  a = rng.standard_normal((50, 4)).astype(np.float32)
  p = _concept_activations(rng, 50, 5)
  kwargs = {"num_permutations": 10, "kernel_kwargs": {"top_k": 5}, **kwargs}
  with pytest.raises(ValueError, match=match) as err:
    scoring.label_pvalues(a, p, **kwargs)
  assert "\n" not in str(err.value)


def test_bh_qvalues_against_reference():
  p = np.array([0.01, 0.04, 0.03, 0.005, 0.5, np.nan, 0.04])
  q = scoring.bh_qvalues(p)
  ok = ~np.isnan(p)
  np.testing.assert_allclose(q[ok], stats.false_discovery_control(p[ok]))
  # By hand: m = 6 sorted 0.005 0.01 0.03 0.04 0.04 0.5.
  np.testing.assert_allclose(q[ok], [0.03, 0.048, 0.048, 0.03, 0.5, 0.048])
  assert np.isnan(q[5])
  with pytest.raises(ValueError, match=r"p_values must lie in \[0, 1\]"):
    scoring.bh_qvalues([0.2, 1.5])


# ----------------------------------------------------------------------------
# Concept presence and the split.
# ----------------------------------------------------------------------------


def test_concept_presence_is_the_sigmoid():
  p = np.linspace(0.1, 0.4, 12, dtype=np.float32).reshape(3, 4)
  want = 1 / (1 + np.exp(-58.0 * (p.astype(np.float64) - 0.25)))
  np.testing.assert_allclose(scoring.concept_presence(p), want, rtol=1e-6)
  np.testing.assert_allclose(scoring.concept_presence(p, a=10, b=-0.2),
                             1 / (1 + np.exp(-10 * (p - 0.2))), rtol=1e-6)
  with pytest.raises(ValueError, match="presence slope a=0"):
    scoring.concept_presence(p, a=0)
  with pytest.raises(ValueError, match=r"non-empty 2-D array.*shape \(12,\)"):
    scoring.concept_presence(p.ravel())
  with pytest.raises(ValueError, match="NaN or inf"):
    scoring.concept_presence(np.full((2, 2), np.nan))


def test_fit_presence_params_recovers_a_b():
  rng = np.random.default_rng(0)
  p = _concept_activations(rng, 2000, 50)
  y = rng.uniform(size=p.shape) < 1 / (1 + np.exp(-58.0 * (p - 0.25)))
  a, b = scoring.fit_presence_params(p, y.astype(np.float32))
  assert a == pytest.approx(58.0, rel=0.05)
  assert b == pytest.approx(-0.25, abs=0.003)
  # (N,) concept indices mean a one-hot presence matrix.
  idx = np.argmax(p + 0.01 * rng.standard_normal(p.shape), axis=1)
  assert scoring.fit_presence_params(p, idx) == pytest.approx(
      scoring.fit_presence_params(p, np.eye(50)[idx]), rel=1e-6)


@pytest.mark.parametrize("presence,match", [
    (np.zeros((30, 4)), "both present and absent"),
    (np.zeros((30, 3)), r"expected \(30, 4\)"),
    (np.full((30, 4), 0.5), "only 0 and 1"),
    (np.arange(30) % 7, "allowed: 0..3"),
])
def test_fit_presence_params_bad_input(presence, match):
  p = _concept_activations(np.random.default_rng(0), 30, 4)
  with pytest.raises(ValueError, match=match) as err:
    scoring.fit_presence_params(p, presence)
  assert "\n" not in str(err.value)


def test_fit_presence_params_separated():
  p = _concept_activations(np.random.default_rng(0), 30, 4)
  with pytest.raises(ValueError, match="perfectly separated"):
    scoring.fit_presence_params(p, (p > 0.22).astype(float))


def test_split_indices():
  fit, held = scoring.split_indices(101, "half", seed=3)
  assert len(held) == 51 and len(fit) == 50
  assert not set(fit) & set(held)
  np.testing.assert_array_equal(np.sort(np.concatenate([fit, held])),
                                np.arange(101))
  np.testing.assert_array_equal(held, np.sort(held))
  np.testing.assert_array_equal(held, scoring.split_indices(101, seed=3)[1])
  assert not np.array_equal(held, scoring.split_indices(101, seed=4)[1])
  fit, held = scoring.split_indices(20, "all")
  np.testing.assert_array_equal(fit, np.arange(20))
  np.testing.assert_array_equal(held, np.arange(20))
  assert len(scoring.split_indices(100, 0.2)[1]) == 20


@pytest.mark.parametrize("n,split,match", [
    (18, "half", "leaves 9 held-out images; at least 10"),
    (9, "all", "leaves 9 held-out images"),
    (100, 0.05, "leaves 5 held-out images"),
    (100, "thirds", "unknown split 'thirds'"),
    (100, 1.0, "unknown split 1.0"),
    (0, "half", "num_images must be a positive int"),
])
def test_split_bad_input(n, split, match):
  with pytest.raises(ValueError, match=match) as err:
    scoring.split_indices(n, split)
  assert "\n" not in str(err.value)
  assert len(scoring.split_indices(19, "half")[1]) == 10  # 10 is enough.


# ----------------------------------------------------------------------------
# Simulation scores against numpy references.
# ----------------------------------------------------------------------------


def _ref_ranks(x):
  order = np.argsort(x, kind="stable")
  sx = x[order]
  ranks = np.empty(len(x))
  i = 0
  while i < len(x):
    j = i
    while j + 1 < len(x) and sx[j + 1] == sx[i]:
      j += 1
    ranks[order[i:j + 1]] = (i + j) / 2
    i = j + 1
  return ranks


def _ref_pearson(x, y):
  if x.max() == x.min() or y.max() == y.min():
    return np.nan
  return np.corrcoef(x.astype(np.float64), y.astype(np.float64))[0, 1]


def _ref_auprc(act, score, top_fraction=0.05):
  """Average precision with one threshold per distinct score."""
  if act.max() == act.min():
    return np.nan
  n_pos = max(1, math.floor(len(act) * top_fraction))
  pos = np.zeros(len(act))
  pos[np.argsort(-act, kind="stable")[:n_pos]] = 1
  ap, prev_recall = 0.0, 0.0
  for t in np.unique(score)[::-1]:
    sel = score >= t
    recall = pos[sel].sum() / n_pos
    ap += (recall - prev_recall) * pos[sel].sum() / sel.sum()
    prev_recall = recall
  return ap


def _ref_scores(a, p, idx, w, bias, held, pa=58.0, pb=-0.25):
  c = 1 / (1 + np.exp(-pa * (p[held].astype(np.float64) + pb)))
  out = []
  for k in range(a.shape[1]):
    pred = c[:, idx[k]] @ w[k] + bias[k]
    # float32 as the library computes it, so that saturated ties match.
    pred = pred.astype(np.float32)
    act = a[held, k]
    out.append((_ref_pearson(act, pred),
                _ref_pearson(_ref_ranks(act), _ref_ranks(pred))
                if act.max() > act.min() and pred.max() > pred.min()
                else np.nan, _ref_auprc(act, pred)))
  return np.array(out).T


@pytest.fixture(scope="module")
def sim_inputs():
  rng = np.random.default_rng(1)
  n, m = 300, 8
  p = _concept_activations(rng, n, m)
  p[:, 0] = 0.9  # Saturates: C = 1 exactly, a constant prediction.
  p[:, 1] = np.round(p[:, 1], 2)  # Ties in the prediction.
  a = rng.standard_normal((n, 7)).astype(np.float32)
  a[:, 2] = 1.5  # A constant neuron.
  a[:, 3] = np.round(a[:, 3])  # Tied activations.
  a[:, 4] = 3 * p[:, 5] + 0.01 * rng.standard_normal(n)
  return a, p


def test_label_scores_match_numpy(sim_inputs):
  a, p = sim_inputs
  labels = np.array([1, 0, 3, 1, 5, 6, 7])
  res = scoring.simulation_scores(a, p, labels, seed=2)
  _, held = scoring.split_indices(a.shape[0], "half", seed=2)
  np.testing.assert_array_equal(res.heldout, held)
  want = _ref_scores(a, p, labels[:, None], np.ones((7, 1)), np.zeros(7),
                     held)
  for got, ref in zip((res.correlation, res.spearman, res.auprc), want):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # Constant prediction (neuron 1, label 0): NaN correlations, base rate AP.
  assert np.isnan(res.correlation[1]) and np.isnan(res.spearman[1])
  assert res.auprc[1] == pytest.approx(math.floor(len(held) * 0.05) /
                                       len(held))
  # Constant neuron: NaN everywhere.
  assert np.isnan([res.correlation[2], res.spearman[2], res.auprc[2]]).all()
  assert res.correlation[4] > 0.9 and res.auprc[4] > 0.5


def test_weighted_explanations_match_numpy(sim_inputs):
  a, p = sim_inputs
  idx = np.array([[5, 1, -1], [3, 4, 6], [1, -1, -1], [0, 1, 2],
                  [5, -1, -1], [6, 7, 2], [4, 3, -1]])
  w = np.round(np.random.default_rng(0).normal(size=idx.shape), 2)
  bias = np.linspace(-1, 1, 7)
  res = scoring.simulation_scores(a, p, (idx, w, bias), split="all")
  want = _ref_scores(a, p, [r[r >= 0] for r in idx],
                     [ww[r >= 0] for r, ww in zip(idx, w)], bias,
                     np.arange(a.shape[0]))
  for got, ref in zip((res.correlation, res.spearman, res.auprc), want):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
  # The same explanations as a list of per-neuron items.
  items = [(r[r >= 0], ww[r >= 0], b) for r, ww, b in zip(idx, w, bias)]
  again = scoring.simulation_scores(a, p, items, split="all")
  np.testing.assert_array_equal(again.correlation, res.correlation)


def test_planted_simulation_correlation(layer, pvalues):
  """Planted neurons' labels predict them; noisier ones less well."""
  a, p = layer["a"], layer["p"]
  k = layer["num_planted"]
  res = scoring.simulation_scores(a[:, :k], p, pvalues["wpmi"].labels[:k],
                                  a=30.0, b=-0.22, seed=0)
  want = _ref_scores(a[:, :k], p, pvalues["wpmi"].labels[:k, None],
                     np.ones((k, 1)), np.zeros(k), res.heldout, 30.0, -0.22)
  np.testing.assert_allclose(res.correlation, want[0], rtol=1e-5, atol=1e-6)
  by_level = [np.mean(res.correlation[layer["levels"] == lv])
              for lv in NOISE_LEVELS]
  assert by_level[0] > 0.9 and by_level[0] > by_level[1] > by_level[2] > 0.4


@pytest.mark.parametrize("explanations,match", [
    (np.array([0, 1, 2]), r"expected \(7, L\)"),
    (np.array([0, 1, 2, 3, 4, 5, 8]), r"span \[0, 8\]; allowed: 0..7"),
    ([0, 1, 2, 3, 4, 5, "x"], "explanation of neuron 6 is 'x'"),
])
def test_simulation_bad_input(sim_inputs, explanations, match):
  a, p = sim_inputs
  with pytest.raises(ValueError, match=match) as err:
    scoring.simulation_scores(a, p, explanations)
  assert "\n" not in str(err.value)


def test_simulation_split_too_small():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((18, 2)).astype(np.float32)
  p = _concept_activations(rng, 18, 3)
  with pytest.raises(ValueError, match="leaves 9 held-out images"):
    scoring.simulation_scores(a, p, np.array([0, 1]))
  assert scoring.simulation_scores(a, p, np.array([0, 1]),
                                   split="all").correlation.shape == (2,)
