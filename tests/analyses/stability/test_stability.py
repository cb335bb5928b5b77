"""Bootstrap / top_k stability on planted and noise neurons."""

import json
import os

import jax
import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect.analyses import stability as stability_analysis
from jax_dissect.analyses.stability import bootstrap as stability
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth


@pytest.fixture(scope="module")
def results(tmp_path_factory):
  path = synth.write_results(str(tmp_path_factory.mktemp("res")),
                             synth.make_world())
  return results_lib.load_run(path)


def test_planted_neurons_stable_noise_neurons_not(results, tmp_path):
  rows, summary = stability_analysis.layer_stability(
      results, "layer4", num_resamples=12, seed=3)
  planted, noise = rows[:4], rows[4:]
  for r in planted:  # neurons 0..3 fire on classes 0..3
    assert r["description"] == synth.CLASSES[r["unit"]]
    assert r["agreement"] == 1.0
    assert r["score_ci_low"] <= r["similarity"] + 1e-5
    assert r["label_top_k_5"] == r["label_top_k_10"] == r["description"]
  assert all(r["agreement"] < 1.0 for r in noise)
  assert (np.mean([r["score_ci_high"] - r["score_ci_low"] for r in noise]) >
          np.mean([r["score_ci_high"] - r["score_ci_low"] for r in planted]))
  assert summary["top_ks"] == [5, 10, 16, 50]  # 100 > N = 96 is skipped
  assert summary["stable_fraction"] == 0.5
  assert summary["label_matches_results"] == 1.0
  output = analyses.run("stability", results, layers=("layer4",),
                         num_resamples=12, seed=3)
  assert output.tables["stability"].rows == rows
  paths = results_lib.write_analysis(output, str(tmp_path))
  with open(paths["stability_summary.json"]) as f:
    assert json.load(f)[0]["layer"] == "layer4"
  with open(paths["stability.csv"]) as f:
    header = f.readline().strip().split(",")
  assert {"agreement", "score_ci_low", "label_top_k_50"} <= set(header)
  entries = results_lib.analysis_outputs(str(tmp_path))
  per_neuron = [e for e in entries if e.per_neuron]
  assert [e.file for e in per_neuron] == ["stability.csv"]
  assert per_neuron[0].neuron_columns == ("agreement", "score_ci_low",
                                          "score_ci_high")


def test_seeded_and_resample_independent_of_b():
  key = jax.random.key(7)
  a = stability.bootstrap_indices(key, 30, 3)
  b = stability.bootstrap_indices(key, 30, 5)
  np.testing.assert_array_equal(a, b[:3])
  assert a.min() >= 0 and a.max() < 30
  assert not np.array_equal(a[0], a[1])
  w = synth.make_world(n_per_class=6)
  args = (w["activations"]["layer4"], w["P"], "soft_wpmi")
  kw = dict(num_resamples=4, seed=1, top_ks=(5,), kernel_kwargs={"top_k": 5})
  s1 = stability.label_stability(*args, **kw)
  s2 = stability.label_stability(*args, **kw)
  np.testing.assert_array_equal(s1.resample_labels, s2.resample_labels)
  np.testing.assert_array_equal(s1.resample_scores, s2.resample_scores)


def test_kernel_without_top_k_and_rank_reorder():
  w = synth.make_world(n_per_class=6)
  a, p = w["activations"]["fc"], w["P"]
  st = stability.label_stability(a, p, "cos_similarity", num_resamples=3)
  assert st.top_ks == () and np.all(np.isnan(st.top_k_agreement))
  np.testing.assert_array_equal(st.labels, np.arange(8))
  assert st.agreement.shape == (8,) and st.score_ci.shape == (8, 2)
  rr = stability.label_stability(a, p, "rank_reorder", num_resamples=2)
  assert np.all(np.isfinite(rr.scores))


def test_bad_arguments():
  a, p = np.ones((10, 2)), np.ones((10, 3))
  with pytest.raises(ValueError, match="num_resamples must be a positive"):
    stability.label_stability(a, p, num_resamples=0)
  with pytest.raises(ValueError, match="confidence must be in"):
    stability.label_stability(a, p, confidence=95)
  with pytest.raises(ValueError, match="must share N"):
    stability.label_stability(a, np.ones((9, 3)))
  with pytest.raises(ValueError, match="unknown similarity function"):
    stability.label_stability(a, p, "pmi")


def test_run_seed_and_large_top_k_are_honoured(tmp_path):
  world = synth.make_world(n_per_class=5)  # N = 40
  # rank_reorder run with seed 5: the recomputed scores are the run's.
  path = synth.write_results(str(tmp_path / "rr"), world, "rank_reorder",
                             {"top_fraction": 0.25},
                             seed=5)
  results = results_lib.load_run(path)
  assert results.seed == 5
  rows, summary = stability_analysis.layer_stability(results, "fc",
                                                     num_resamples=2)
  assert summary["label_matches_results"] == 1.0
  assert summary["top_ks"] == []
  for row, neuron in zip(rows, results.layer_neurons("fc")):
    assert row["similarity"] == pytest.approx(neuron.similarity, rel=1e-5)
  other = stability.label_stability(results.activations("fc"),
                                    results.concept_activations(),
                                    "rank_reorder", num_resamples=1, seed=5,
                                    kernel_seed=0,
                                    kernel_kwargs={"top_fraction": 0.25})
  assert not np.allclose(other.scores, [r["similarity"] for r in rows])
  # A run whose top_k (100) exceeds N: lowered to N, as describe_neurons does.
  path = synth.write_results(str(tmp_path / "big"), world, "soft_wpmi",
                             {"top_k": 40})
  with open(os.path.join(path, "config.json")) as f:
    config = json.load(f)
  config["similarity_kwargs"] = {"top_k": 100}
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  os.remove(os.path.join(path, "manifest.json"))  # Edited by hand.
  _, summary = stability_analysis.layer_stability(
      results_lib.load_run(path), "fc", num_resamples=2, top_ks=(5,))
  assert summary["label_matches_results"] == 1.0
