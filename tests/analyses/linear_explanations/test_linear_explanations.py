"""Linear explanations: planted neurons, a numpy reference, errors, analysis.

Planted neurons are made as C[:, S] @ w + noise with C the concept presence
of structured concept activations P (a low-rank image x concept part plus
noise, as CLIP's P is), for known sets S of 1 to 5 concepts.
"""

import csv
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest
from sklearn import linear_model

from jax_dissect import analyses
from jax_dissect import report
from jax_dissect import similarity
from jax_dissect.analyses.linear_explanations import solver as le
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.store import results
from tests.helpers import synthetic_run as synth

# Noise of the planted neurons: standard deviation relative to that of the
# planted signal C[:, S] @ w.
NOISE = 0.5


def _structured_p(rng, n, m, rank=16):
  """P = 0.25 + a rank-16 part + independent noise (mean |corr| ~0.1)."""
  emb = rng.standard_normal((n, rank))
  txt = rng.standard_normal((rank, m))
  return (0.25 + 0.015 * (emb @ txt) / math.sqrt(rank) +
          0.015 * rng.standard_normal((n, m))).astype(np.float32)


def _planted(seed, n, m, k, noise=NOISE):
  rng = np.random.default_rng(seed)
  p = _structured_p(rng, n, m)
  c = scoring.concept_presence(p)
  sets = [rng.choice(m, 1 + i % 5, replace=False) for i in range(k)]
  act = np.empty((n, k), np.float32)
  for i, s in enumerate(sets):
    w = rng.uniform(0.6, 1.4, len(s)) * rng.choice([-1.0, 1.0], len(s))
    signal = c[:, s] @ w
    act[:, i] = signal / signal.std() + noise * rng.standard_normal(n)
  return act, p, sets


@pytest.fixture(scope="module")
def planted():
  act, p, sets = _planted(0, n=3000, m=400, k=60)
  out = le.linear_explanations(act, p, seed=0, chunk_size=32)
  return {"act": act, "p": p, "sets": sets, "out": out}


def _concept_sets(out):
  return [set(row[row >= 0].tolist()) for row in out.concepts]


def test_planted_neurons_recover_their_concepts(planted):
  got = _concept_sets(planted["out"])
  tp = sum(len(g & set(s.tolist())) for g, s in zip(got, planted["sets"]))
  chosen = sum(len(g) for g in got)
  true = sum(len(s) for s in planted["sets"])
  precision, recall = tp / chosen, tp / true
  assert precision >= 0.9 and recall >= 0.9, (precision, recall)
  # Noise caps the correlation at 1 / sqrt(1 + NOISE^2) = 0.894.
  assert np.all(planted["out"].correlation > 0.8)


def test_linear_beats_the_single_label_on_every_planted_neuron(planted):
  act, p = planted["act"], planted["p"]
  labels = np.asarray(jnp.argmax(similarity.compute(
      "soft_wpmi", act, p, devices=1), axis=1))
  single = scoring.simulation_scores(act, p, labels, seed=0).correlation
  linear = planted["out"].correlation
  # One-concept neurons tie with their label (up to float32 rounding).
  assert np.all(linear >= single - 1e-5), np.flatnonzero(linear < single)
  assert np.mean(linear - single) > 0.05


def test_heldout_correlation_is_the_simulation_score(planted):
  out = planted["out"]
  sim = scoring.simulation_scores(planted["act"], planted["p"],
                                  out.explanations(), seed=0)
  np.testing.assert_allclose(sim.correlation, out.correlation, atol=1e-4)
  np.testing.assert_array_equal(sim.heldout, out.heldout)


def test_chunk_size_does_not_change_the_result(planted):
  act, p = planted["act"][:, :20], planted["p"]
  a = le.linear_explanations(act, p, chunk_size=7)
  b = le.linear_explanations(act, p, chunk_size=20)
  np.testing.assert_array_equal(a.concepts, b.concepts)
  np.testing.assert_allclose(a.weights, b.weights, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(a.correlation, b.correlation, atol=1e-5)


def test_elastic_net_matches_sklearn():
  act, p, _ = _planted(1, n=400, m=50, k=3)
  design = le.prepare(p, a=58.0, b=-0.25, seed=0, num_images=400)
  y_fit, _, _ = le.standardize_activations(act, design.fit, design.heldout)
  w, ranked = le.elastic_net(
      design.fit_t, jnp.asarray(y_fit), jnp.float32(0.05),
      jnp.float32(0.99), steps=3000, screen=50, num_ranked=10)
  # Screened to each neuron's 15 best-correlated concepts: same support.
  _, ranked15 = le.elastic_net(
      design.fit_t, jnp.asarray(y_fit), jnp.float32(0.05),
      jnp.float32(0.99), steps=3000, screen=15, num_ranked=10)
  x = np.asarray(design.fit_t).T.astype(np.float64)
  for k in range(3):
    ref = linear_model.ElasticNet(alpha=0.05, l1_ratio=0.99,
                                  fit_intercept=False, tol=1e-10,
                                  max_iter=100000).fit(x, y_fit[:, k])
    np.testing.assert_allclose(np.asarray(w)[:, k], ref.coef_, atol=2e-3)
    nonzero = np.flatnonzero(np.abs(ref.coef_) > 1e-2)
    top = np.argsort(-np.abs(ref.coef_))[:len(nonzero)]
    assert set(np.asarray(ranked)[k, :len(nonzero)].tolist()) == set(
        top.tolist())
    # A concept outside the screen enters the ranking by its gradient.
    assert set(top.tolist()) <= set(np.asarray(ranked15)[k].tolist())


@pytest.mark.parametrize("solve_batch", [3, 7])
def test_vmapped_screened_solve_matches_one_neuron_at_a_time(solve_batch):
  # solve_batch is what an accelerator uses; a CPU solves one at a time.
  act, p, _ = _planted(4, n=400, m=60, k=7)
  design = le.prepare(p, a=58.0, b=-0.25, seed=0, num_images=400)
  y_fit, _, _ = le.standardize_activations(act, design.fit, design.heldout)
  run = lambda batch: le.elastic_net(
      design.fit_t, jnp.asarray(y_fit), jnp.float32(0.05),
      jnp.float32(0.99), steps=200, screen=20, num_ranked=10,
      solve_batch=batch)
  w1, ranked1 = run(None)
  wb, rankedb = run(solve_batch)
  np.testing.assert_allclose(np.asarray(wb), np.asarray(w1), atol=1e-5)
  np.testing.assert_array_equal(np.asarray(rankedb), np.asarray(ranked1))
  on_cpu = all(d.platform == "cpu" for d in design.fit_t.devices())
  assert (le.solve_batch_size(design.fit_t, 256) is None) == on_cpu
  assert le.solve_batch_size(design.fit_t, 8) in (None, 8)


# ----------------------------------------------------------------------------
# numpy reference of the greedy search (per neuron, per image, numpy Adam).
# ----------------------------------------------------------------------------


def _adam_fit(z, y, steps, lr, b1=0.9, b2=0.999, eps=1e-8):
  """Adam on mean((z @ w + bias - y)^2) from zeros, z (n, d)."""
  theta = np.zeros(z.shape[1] + 1)
  m1 = np.zeros_like(theta)
  m2 = np.zeros_like(theta)
  for t in range(1, steps + 1):
    r = z @ theta[:-1] + theta[-1] - y
    g = np.concatenate([2.0 * z.T @ r / len(y), [2.0 * r.mean()]])
    m1 = b1 * m1 + (1 - b1) * g
    m2 = b2 * m2 + (1 - b2) * g * g
    theta -= lr * (m1 / (1 - b1 ** t)) / (np.sqrt(m2 / (1 - b2 ** t)) + eps)
  return theta[:-1], theta[-1]


def _fit_gain(zf, yf, chosen, c):
  """Reduction of the centered least-squares residual variance on F when
  concept c joins the chosen ones."""
  y = yf - yf.mean()

  def rss(cols):
    if not cols:
      return float(y @ y)
    x = zf[:, cols].astype(np.float64)
    x = x - x.mean(0)
    r = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    return float(r @ r)

  return (rss(chosen) - rss(chosen + [c])) / len(y)


def _reference_greedy(ranked, zf, zh, yf, yh, width, max_length, tolerance,
                      steps=100, lr=0.3):
  """The greedy forward selection of the module docstring, for one neuron.

  ranked: candidate concepts best first; zf (|F|, M), zh (H, M): standardized
  presences; yf, yh: standardized activations.
  """
  chosen, corr = [], 0.0
  while len(chosen) < max_length:
    rest = [c for c in ranked if c not in chosen]
    if not rest:
      break
    fit_gains = [_fit_gain(zf, yf, chosen, c) for c in rest]
    window = [rest[i] for i in np.argsort(fit_gains, kind="stable")[::-1]]
    window = window[:width]
    gains = []
    for c in window:
      cols = chosen + [c]
      w, bias = _adam_fit(zf[:, cols].astype(np.float64), yf, steps, lr)
      pred = zh[:, cols] @ w + bias
      r = np.corrcoef(pred, yh)[0, 1] if pred.std() > 0 else 0.0
      gains.append(r - corr)
    best = int(np.argmax(gains))
    if gains[best] < tolerance:
      break
    chosen.append(window[best])
    corr += gains[best]
  return chosen, corr


def test_greedy_search_matches_a_numpy_reference():
  act, p, _ = _planted(2, n=600, m=80, k=8, noise=0.6)
  opts = le.check_options(width=4, max_length=5)
  design = le.prepare(p, a=58.0, b=-0.25, seed=3, num_images=600)
  y_fit, y_held, _ = le.standardize_activations(act, design.fit,
                                                design.heldout)
  _, ranked = le.elastic_net(
      design.fit_t, jnp.asarray(y_fit), jnp.float32(opts["lam"]),
      jnp.float32(opts["alpha"]), steps=opts["en_steps"],
      screen=min(80, opts["screen"]), num_ranked=20)
  concepts, _, _, corr, lengths = le.explain_chunk(design, y_fit, y_held,
                                                   opts)
  zf = np.asarray(design.fit_t).T
  zh = np.asarray(design.held_t).T
  ranked = np.asarray(ranked)
  assert np.all(lengths >= 1) and np.any(lengths >= 3)
  for k in range(act.shape[1]):
    ref, ref_corr = _reference_greedy(
        ranked[k].tolist(), zf, zh, y_fit[:, k], y_held[:, k],
        width=4, max_length=5, tolerance=opts["tolerance"])
    assert concepts[k, :lengths[k]].tolist() == ref, k
    assert math.isclose(corr[k], ref_corr, abs_tol=1e-4), (corr[k], ref_corr)


# ----------------------------------------------------------------------------
# Two-concept neurons over mixing ratios and noise levels.
# ----------------------------------------------------------------------------

SHARES = (0.5, 0.6, 0.7)
TWO_NOISE = (0.25, 0.5)
SIGNS = (1.0, -1.0)
PER_CASE = 16


def _clip_like_p(rng, n, m, shared=0.6, rank=16):
  """P whose concepts all correlate through an image-level factor, as
  CLIP's cosine similarities do (presence correlations 0.5 to 0.7 for
  shared = 0.6)."""
  own = (rng.standard_normal((n, rank)) @ rng.standard_normal((rank, m)) /
         math.sqrt(rank) * 0.6 + 0.8 * rng.standard_normal((n, m)))
  own /= own.std(0)
  z = math.sqrt(shared) * rng.standard_normal((n, 1)) + math.sqrt(
      1.0 - shared) * own
  return (0.21 + 0.025 * z).astype(np.float32)


@pytest.fixture(scope="module")
def two_concept():
  """Neurons y = sqrt(s) z1 +- sqrt(1 - s) z2 (standardized presences of
  two concepts, rescaled to variance 1) + noise, for every mixing ratio s,
  noise level and sign; one call for all of them."""
  rng = np.random.default_rng(11)
  n, m = 1000, 300
  p = _clip_like_p(rng, n, m)
  c = scoring.concept_presence(p)
  z = (c - c.mean(0)) / c.std(0)
  rho = z.T @ z / n
  cases, cols = [], []
  for share in SHARES:
    for noise in TWO_NOISE:
      for sign in SIGNS:
        for _ in range(PER_CASE):
          while True:  # Distinct concepts, not near-duplicates.
            c1, c2 = rng.choice(m, 2, replace=False)
            if rho[c1, c2] < 0.7:
              break
          signal = math.sqrt(share) * z[:, c1] + sign * math.sqrt(
              1.0 - share) * z[:, c2]
          cols.append(signal / signal.std() +
                      noise * rng.standard_normal(n))
          cases.append((share, noise, sign, int(c1), int(c2),
                        float(rho[c1, c2])))
  act = np.stack(cols, 1).astype(np.float32)
  out = le.linear_explanations(act, p, seed=0, chunk_size=96)
  return {"cases": cases, "out": out, "rho": rho}


def test_two_concept_pairs_are_correlated_like_clip(two_concept):
  rho = np.array([case[5] for case in two_concept["cases"]])
  assert np.median(rho) > 0.45 and rho.max() > 0.6, np.median(rho)


@pytest.mark.parametrize("sign", SIGNS)
@pytest.mark.parametrize("noise", TWO_NOISE)
@pytest.mark.parametrize("share", SHARES)
def test_two_concept_neurons_name_both_concepts(two_concept, share, noise,
                                               sign):
  out = two_concept["out"]
  missed = []
  for k, case in enumerate(two_concept["cases"]):
    if case[:3] != (share, noise, sign):
      continue
    chosen = set(out.concepts[k][out.concepts[k] >= 0].tolist())
    if not {case[3], case[4]} <= chosen:
      missed.append((k, case[3:], sorted(chosen)))
    # Noise caps the correlation at 1 / sqrt(1 + noise^2) (0.89 at 0.5).
    assert out.correlation[k] >= 0.8, (k, case, out.correlation[k])
  assert not missed, missed


def _suppressor_neurons(seed, n, m, k, share=0.7, noise=0.25):
  """y = sqrt(s) z1 - sqrt(1 - s) z2 for concepts with presence correlation
  ~sqrt((1 - s) / s) (0.65 at s = 0.7): y hardly correlates with z2 alone,
  yet z2 is half of the explanation."""
  rng = np.random.default_rng(seed)
  p = _clip_like_p(rng, n, m, shared=0.65)
  c = scoring.concept_presence(p)
  z = (c - c.mean(0)) / c.std(0)
  rho = z.T @ z / n
  target = math.sqrt((1.0 - share) / share)
  pairs, cols = [], []
  while len(pairs) < k:
    c1, c2 = (int(x) for x in rng.choice(m, 2, replace=False))
    if abs(rho[c1, c2] - target) < 0.03:
      signal = math.sqrt(share) * z[:, c1] - math.sqrt(1.0 - share) * z[:, c2]
      cols.append(signal / signal.std() + noise * rng.standard_normal(n))
      pairs.append((c1, c2))
  act = np.stack(cols, 1).astype(np.float32)
  marginal = [abs(np.corrcoef(act[:, i], z[:, c2])[0, 1])
              for i, (_, c2) in enumerate(pairs)]
  return act, p, pairs, np.array(marginal)


def test_screened_net_finds_a_concept_that_matters_only_jointly():
  act, p, pairs, marginal = _suppressor_neurons(5, n=1000, m=300, k=6)
  assert np.all(marginal < 0.15), marginal
  design = le.prepare(p, a=58.0, b=-0.25, seed=0, num_images=1000)
  y_fit, _, _ = le.standardize_activations(act, design.fit, design.heldout)
  run = lambda screen: np.asarray(le.elastic_net(
      design.fit_t, jnp.asarray(y_fit), jnp.float32(0.05),
      jnp.float32(0.99), steps=200, screen=screen, num_ranked=10)[1])
  # The screen of the 30 best-correlated concepts leaves z2 out; the
  # refit on the KKT violators brings it back: both lead the ranking, as
  # in the net on every concept.
  for ranked in (run(30), run(300)):
    for k, pair in enumerate(pairs):
      assert set(ranked[k, :2].tolist()) == set(pair), (k, pair, ranked[k])


def test_short_search_finds_a_concept_that_matters_only_jointly():
  # 10 candidates, 5 tried per step: z2 must be among them and must not be
  # dropped after failing alone.
  act, p, pairs, _ = _suppressor_neurons(6, n=1000, m=300, k=12)
  out = le.linear_explanations(act, p, seed=0, max_length=2, width=5)
  for k, pair in enumerate(pairs):
    assert set(out.concepts[k].tolist()) == set(pair), (k, pair,
                                                        out.concepts[k])
  assert np.all(out.correlation > 0.9), out.correlation


# ----------------------------------------------------------------------------
# Bad input.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 0}, "width=0 must be an int >= 1"),
    ({"max_length": 2.5}, "max_length=2.5 must be an int"),
    ({"tolerance": -0.1}, "tolerance=-0.1 must be a finite number"),
    ({"alpha": 1.5}, "alpha=1.5 must be a finite number in [0.0, 1.0]"),
    ({"lam": float("nan")}, "lam=nan must be a finite number"),
    ({"learning_rate": 0.0}, "learning_rate=0.0 must be"),
    ({"chunk_size": 0}, "chunk_size=0 must be an int >= 1"),
    ({"a": -1.0}, "presence slope a=-1.0"),
    ({"depth": 3}, "unknown option(s) ['depth']"),
])
def test_bad_options_are_one_line_errors(kwargs, match):
  act, p, _ = _planted(3, n=100, m=20, k=2)
  with pytest.raises(ValueError) as e:
    le.linear_explanations(act, p, **kwargs)
  assert match in str(e.value) and "\n" not in str(e.value)


def test_bad_arrays_are_one_line_errors():
  act, p, _ = _planted(3, n=100, m=20, k=2)
  bad = act.copy()
  bad[0, 0] = np.nan
  cases = [((bad, p), "activations contains NaN"),
           ((act[:50], p), "activations have 50 images but"),
           ((act[:, 0], p), "activations must be a non-empty 2-D array"),
           ((act, p[:, :0]), "concept_activations must be a non-empty"),
           ((act[:15], p[:15]), "at least 10 are needed")]
  for args, match in cases:
    with pytest.raises(ValueError) as e:
      le.linear_explanations(*args)
    assert match in str(e.value) and "\n" not in str(e.value), e.value


# ----------------------------------------------------------------------------
# The analysis.
# ----------------------------------------------------------------------------


def test_analysis_writes_the_table_the_report_joins(tmp_path):
  world = synth.make_world()
  path = synth.write_results(str(tmp_path / "run"), world)
  run = results.load_run(path)
  # The synthetic P saturates the default presence: fit a, b to the classes.
  a, b = scoring.fit_presence_params(world["P"][:, :len(synth.CLASSES)],
                                     world["y"])
  out = analyses.run("linear_explanations", run, layer="layer4",
                     max_length=3, a=a, b=b)
  paths = results.write_analysis(out, run.analysis_dir())
  table = os.path.join(run.analysis_dir(), "linear_explanations.csv")
  assert table in paths.values()
  with open(table, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  head = ["layer", "unit", "correlation"]
  for j in range(3):
    head += [f"concept_{j}", f"weight_{j}"]
  assert rows[0][:len(head) + 1] == head + ["bias"]
  assert "single_correlation" in rows[0]
  assert len(rows) == 1 + len(run.layer_neurons("layer4"))
  got = {int(r[1]): r for r in rows[1:]}
  # Planted neurons 0..3 fire on class k: the class name is chosen first.
  for unit in range(4):
    assert got[unit][3] == synth.CLASSES[unit], got[unit]
    assert float(got[unit][2]) > 0.8
  entry = [e for e in results.analysis_outputs(run.analysis_dir())
           if e.path.endswith("linear_explanations.csv")][0]
  assert entry.per_neuron and "single_correlation" in entry.neuron_columns
  # The report shows both correlations and the explanation beside the label.
  data = report.collect_report_data(run, num_thumbs=0)
  neuron = data["views"][0]["rows"][0]
  assert neuron["linear_explanations.correlation"] == pytest.approx(
      float(got[0][2]))
  assert neuron["linear_explanations.single_correlation"] is not None
  assert synth.CLASSES[0] in neuron["linear_explanations.explanation"]
  with pytest.raises(ValueError, match="layer 'layer9' is not in"):
    analyses.run("linear_explanations", run, layer="layer9")
  with pytest.raises(ValueError, match="width=0 must be >= 1"):
    analyses.run("linear_explanations", run, width=0)
