"""Comparing runs: two smoke runs as two checkpoints, a series of three for
the trend, the math of matching on planted arrays, and what does not apply
to runs with other concept sets."""

import json

import numpy as np
import pytest

from jax_dissect.analyses import _compare
from tests.helpers import smoke_runs

FAKE_EMBED = {"text_embed_fn": "tests.helpers.synthetic_run:fake_embed"}
# Random models score far below the published tau (0.16): a tau among their
# scores makes the shares non-trivial.
TAU = 0.01


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  return smoke_runs.make(tmp_path_factory)


def test_matching_on_planted_arrays():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((200, 6))
  perm = np.array([3, 0, 5, 1, 4, 2])
  b = a[:, perm] * 2.0 + 0.1 * rng.standard_normal((200, 6))  # Permuted.
  corr = _compare.correlation_matrix(a, b)
  best, value = _compare.best_matches(corr)
  np.testing.assert_array_equal(perm[best], np.arange(6))
  assert np.all(value > 0.95)
  null = _compare.correlation_matrix(a, rng.standard_normal((200, 6)))
  assert np.abs(null).max() < 0.3
  np.testing.assert_allclose(_compare.correlation_matrix(a, a).diagonal(), 1,
                             rtol=1e-5)
  assert _compare.label_agreement(["dog", "Cat", "car"],
                                  ["dog", "cat", "sky"]) == pytest.approx(2 / 3)
  assert _compare.matches_by_label(["dog", "sky"],
                                   ["cat", "dog", "dog"]) == [[1, 2], []]
  overlap = _compare.label_overlap(["dog", "dog", "sky"], ["dog", "car"])
  assert overlap == {"jaccard": pytest.approx(1 / 3),
                     "a_in_b": pytest.approx(2 / 3), "b_in_a": 0.5}
  with pytest.raises(ValueError, match="same N images"):
    _compare.correlation_matrix(a, b[:10])


def test_two_checkpoints(runs, tmp_path):
  seed0, seed1 = (smoke_runs.load(runs[k]) for k in ("seed0", "seed1"))
  comp = _compare.compare_runs([seed0, seed1], ["step0", "step1"],
                               profile_options=FAKE_EMBED, tau=TAU)
  assert comp.notes == [] and comp.layers == ["layer1", "layer4"]
  profiles = comp.tables["compare_profiles"]
  assert [(r["run"], r["layer"]) for r in profiles] == [
      ("step0", "layer1"), ("step0", "layer4"), ("step1", "layer1"),
      ("step1", "layer4")]
  for r in profiles:  # The share at tau is recomputed from the scores.
    run = seed0 if r["run"] == "step0" else seed1
    scores = [n.similarity for n in run.layer_neurons(r["layer"])]
    want = 100 * np.mean(np.asarray(scores) > TAU)
    assert 0 < want < 100
    assert r["interpretable_tau"] == pytest.approx(want)
    assert sum(r[f"percent_{c}"] for c in comp.categories) == pytest.approx(
        want)
  (a1, a4) = comp.tables["compare_agreement"]
  labels0 = [n.description for n in seed0.layer_neurons("layer4")]
  labels1 = [n.description for n in seed1.layer_neurons("layer4")]
  assert a4["label_agreement"] == pytest.approx(
      np.mean([x == y for x, y in zip(labels0, labels1)]))
  assert -1 <= a4["mean_best_correlation"] <= 1
  matches = [m for m in comp.tables["compare_matches"]
             if m["layer"] == "layer4"]
  assert len(matches) == 512 and matches[0]["label_a"] == labels0[0]
  m = matches[7]
  assert m["best_label_b"] == labels1[m["best_unit_b"]]
  assert m["n_b_same_label"] == labels1.count(labels0[7])
  paths = _compare.write_comparison(comp, str(tmp_path))
  with open(paths["comparison.json"]) as f:
    manifest = json.load(f)
  assert manifest["runs"] == ["step0", "step1"]
  assert {e["file"] for e in manifest["outputs"]} >= {
      "compare_profiles.csv", "compare_profiles.png", "compare_trend.png"}


def test_series_trend_finds_the_repeated_checkpoint(runs, tmp_path):
  """Three checkpoints where the last is the first again: the first-vs-last
  pair agrees fully and matches every neuron to itself; the different
  seeds do not."""
  seed0, seed1 = (smoke_runs.load(runs[k]) for k in ("seed0", "seed1"))
  comp = _compare.compare_runs([seed0, seed1, seed0], ["a", "b", "c"],
                               profile_options=FAKE_EMBED, tau=TAU,
                               accuracies=[0.1, 0.3, 0.2])
  rows = {(r["run_a"], r["run_b"], r["layer"]): r
          for r in comp.tables["compare_agreement"]}
  assert set(rows) == {(x, y, l) for x, y in (("a", "b"), ("b", "c"),
                                                ("a", "c"))
                       for l in ("layer1", "layer4")}
  for layer in ("layer1", "layer4"):
    same = rows[("a", "c", layer)]
    assert same["label_agreement"] == 1.0
    assert same["identity_match"] == 1.0
    assert same["mean_best_correlation"] == pytest.approx(1.0, abs=1e-4)
    other = rows[("a", "b", layer)]
    assert other["identity_match"] < 0.5
    assert other["mean_best_correlation"] < 0.999
  trend = comp.tables["compare_trend"]
  assert [r["step"] for r in trend] == [0, 0, 1, 1, 2, 2]
  assert trend[0]["agreement_with_previous"] is None
  assert trend[2]["agreement_with_previous"] == rows[("a", "b", "layer1")][
      "label_agreement"]
  first, last = trend[0], trend[4]  # Run c is run a: the same profile.
  assert first["interpretable_tau"] == last["interpretable_tau"]
  acc = comp.tables["compare_accuracy"]
  assert [r["n_runs"] for r in acc] == [3, 3]
  paths = _compare.write_comparison(comp, str(tmp_path))
  assert "compare_accuracy.png" in paths


def test_other_concept_set_says_what_still_applies(runs):
  seed0, other = (smoke_runs.load(runs[k])
                  for k in ("seed0", "other_concepts"))
  comp = _compare.compare_runs([seed0, other], profile_options=FAKE_EMBED)
  assert len(comp.notes) == 1
  assert comp.notes[0].startswith("the runs' concept sets differ (seed0: 12, "
                                  "other_concepts: 9 concepts)")
  assert "profiles and interpretable shares still do, and matches by " \
      "activation correlation" in comp.notes[0]
  for r in comp.tables["compare_agreement"]:
    assert r["label_agreement"] is None and r["jaccard"] is None
    assert r["mean_best_correlation"] is not None
  with pytest.raises(ValueError, match="two or more runs"):
    _compare.compare_runs([seed0])
  with pytest.raises(ValueError, match="layer 'fc' is not in"):
    _compare.compare_runs([seed0, other], layers=["fc"])


def test_interpretable_share_at_q(runs):
  """With alpha, the share of labels with q < alpha (the scoring
  analysis' permutation test), and the categories are shares of those."""
  seed0, seed1 = (smoke_runs.load(runs[k]) for k in ("seed0", "seed1"))
  comp = _compare.compare_runs([seed0, seed1], layers=["layer1"],
                               profile_options=FAKE_EMBED, alpha=0.5)
  for r in comp.tables["compare_profiles"]:
    assert r["alpha"] == 0.5 and 0 <= r["interpretable_q"] <= 100
    assert sum(r[f"percent_{c}"] for c in comp.categories) == pytest.approx(
        r["interpretable_q"])
