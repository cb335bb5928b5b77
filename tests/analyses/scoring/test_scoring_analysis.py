"""The scoring analysis on a synthetic run: table, summary, report, profile."""

import os
import subprocess
import sys

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect import report
from jax_dissect.analyses import scoring as scoring_analysis
from jax_dissect.analyses.scoring import significance
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.store import results as results_lib
from tests import helpers
from tests.helpers import synthetic_run as synth

REPO = helpers.REPO
B = 50


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A synthetic run (layer4: 4 planted + 4 noise neurons; fc: 8 classes)
  with the scoring analysis written."""
  root = tmp_path_factory.mktemp("scoring")
  world = synth.make_world(n_per_class=12)
  results = results_lib.load_run(synth.write_results(str(root / "res"),
                                                     world))
  output = analyses.run("scoring", results, num_permutations=B)
  results_lib.write_analysis(output, results.analysis_dir())
  return results, output


def test_table_has_the_issue_columns_and_equals_the_library(run):
  results, output = run
  path = os.path.join(results.analysis_dir(), "explanation_scores.csv")
  rows = results_lib.read_table(path)
  assert tuple(rows[0]) == scoring_analysis.COLUMNS
  assert len(rows) == len(results.neurons)
  for layer in results.layers:
    neurons = results.layer_neurons(layer)
    labels = np.asarray([results.concepts.index(n.description)
                         for n in neurons])
    a = np.asarray(results.activations(layer))
    p = np.asarray(results.concept_activations())
    sim = scoring.simulation_scores(a, p, labels)
    # The default null tests each neuron's best concept under its
    # statistic, not necessarily its label.
    sig = significance.label_pvalues(
        a, p, results.similarity_fn, num_permutations=B,
        kernel_kwargs=results.kernel_kwargs())
    mine = [r for r in rows if r["layer"] == layer]
    assert [r["description"] for r in mine] == [n.description
                                                for n in neurons]
    np.testing.assert_allclose([float(r["correlation"]) for r in mine],
                               sim.correlation, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([float(r["auprc"]) for r in mine], sim.auprc,
                               rtol=1e-5)
    np.testing.assert_allclose([float(r["p_value"]) for r in mine],
                               sig.p_values)
    np.testing.assert_allclose([float(r["q_value"]) for r in mine],
                               sig.q_values)
    assert [r["tested_concept"] for r in mine] == [
        results.concepts[c] for c in sig.labels]


def test_planted_labels_are_significant_and_summary_counts_them(run):
  results, output = run
  rows = output.tables["explanation_scores"].rows
  q = {(r["layer"], r["unit"]): r["q_value"] for r in rows}
  # layer4 neurons 0..3 fire on one class each; every fc neuron is a class.
  assert all(q[("layer4", k)] < 0.05 for k in range(4))
  assert all(q[("fc", k)] < 0.05 for k in range(8))
  assert min(r["p_value"] for r in rows) == pytest.approx(1 / (1 + B))
  summary = {s["layer"]: s for s in
             output.tables["explanation_scores_summary"].rows}
  for layer, s in summary.items():
    mine = [r for r in rows if r["layer"] == layer]
    assert s["n_significant"] == sum(r["q_value"] < 0.05 for r in mine)
    assert s["significant_fraction"] == s["n_significant"] / len(mine)
    assert s["mean_correlation"] == pytest.approx(
        np.mean([r["correlation"] for r in mine]), rel=1e-6)
  assert summary["fc"]["significant_fraction"] == 1.0
  assert os.path.exists(os.path.join(results.analysis_dir(),
                                     "explanation_scores.png"))


def test_report_shows_the_columns_sortable(run):
  results, _ = run
  data = report.collect_report_data(results, num_thumbs=0)
  fc = next(v for v in data["views"] if v["id"] == "fc")
  cols = {c["key"]: c for c in fc["columns"]}
  for name in scoring_analysis.COLUMNS[3:]:
    c = cols[f"explanation_scores.{name}"]
    assert c["num"] == (name != "tested_concept")
    assert c["analysis"] == "scoring"
  assert 0 < fc["rows"][0]["explanation_scores.p_value"] < 0.05
  page = report.render_html(data)
  assert "explanation_scores.q_value" in page
  assert "Explanation scores per layer" in page


def test_profile_takes_q_below_alpha_as_cutoff(run, tmp_path):
  results, output = run
  table = tmp_path / "cats.tsv"
  table.write_text("".join(f"{c}\tobject\n" for c in synth.CLASSES))
  prof = analyses.run("profile", results, categorizer="table",
                      category_table=str(table), alpha=0.05)
  rows = prof.tables["profile_neurons"].rows
  q = {(r["layer"], r["unit"]): r["q_value"]
       for r in output.tables["explanation_scores"].rows}
  for r in rows:
    assert r["q_value"] == pytest.approx(q[(r["layer"], r["unit"])])
    assert r["interpretable"] == (r["q_value"] < 0.05)
  layer4 = next(r for r in prof.tables["profile"].rows
                if r["layer"] == "layer4")
  assert layer4["n_interpretable"] == sum(
      q[("layer4", k)] < 0.05 for k in range(8))
  assert prof.documents["profile"]["interpretable_if"] == "q < 0.05"
  by_tau = analyses.run("profile", results, categorizer="table",
                        category_table=str(table))
  assert by_tau.documents["profile"]["interpretable_if"] == "score > 0.16"


def test_profile_computes_q_values_without_the_table(tmp_path):
  world = synth.make_world(n_per_class=12)
  results = results_lib.load_run(synth.write_results(str(tmp_path / "r"),
                                                     world))
  q = analyses.get("profile").label_q_values(results, ["fc"])
  assert sorted(q) == [("fc", k) for k in range(8)]
  assert all(v < 0.05 for v in q.values())


def test_nulls_that_test_the_label(run):
  """null=neuron_in_layer and null=layer test the run's labels."""
  results, output = run
  default = {(r["layer"], r["unit"]): r for r in
             output.tables["explanation_scores"].rows}
  # Planted and class neurons: the default tests their label too.
  assert all(default[("fc", k)]["tested_concept"] ==
             default[("fc", k)]["description"] for k in range(8))
  for null in ("neuron_in_layer", "layer"):
    out = analyses.run("scoring", results, num_permutations=20, null=null,
                       layers=("fc",))
    rows = out.tables["explanation_scores"].rows
    assert all(r["tested_concept"] == r["description"] for r in rows)
    assert all(r["q_value"] < 0.05 for r in rows)
    summary = out.tables["explanation_scores_summary"].rows[0]
    assert summary["null"] == null and summary["statistic"] == "kernel"
    assert summary["tested_is_label_fraction"] == 1.0


@pytest.mark.parametrize("overrides, match", [
    ({"num_permutations": 0}, "num_permutations=0 must be >= 1"),
    ({"split": "0.05"}, "leaves 5 held-out images; at least 10"),
    ({"split": "most"}, "split='most' is not valid"),
    ({"null": "image"}, "null='image' is not valid"),
    ({"alpha": 1.5}, "alpha=1.5 must be < 1"),
    ({"layers": ("layer9",)}, "layer 'layer9' is not in"),
])
def test_bad_options_are_one_line(run, overrides, match):
  results, _ = run
  with pytest.raises(ValueError, match=match) as e:
    analyses.run("scoring", results, **overrides)
  assert "\n" not in str(e.value)


def test_unknown_similarity_fn_of_the_run_is_one_line(tmp_path):
  world = synth.make_world(n_per_class=4)
  results = results_lib.load_run(synth.write_results(str(tmp_path / "r"),
                                                     world))
  results.config["similarity_fn"] = "pmi"
  with pytest.raises(ValueError, match="'pmi'") as e:
    analyses.run("scoring", results)
  assert "\n" not in str(e.value)


def test_score_explanations_script(run, tmp_path):
  results, _ = run
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO)
  script = os.path.join(REPO, "scripts", "score_explanations.py")
  proc = subprocess.run(
      [sys.executable, script, f"--results_dir={results.path}",
       "--num_permutations=20", "--layers=fc", f"--out_dir={tmp_path}"],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "fc: mean correlation" in proc.stdout
  rows = results_lib.read_table(str(tmp_path / "explanation_scores.csv"))
  assert len(rows) == 8 and float(rows[0]["p_value"]) == pytest.approx(1 / 21)
  bad = subprocess.run(
      [sys.executable, script, f"--results_dir={results.path}",
       "--split=0.01"], capture_output=True, text=True, env=env, timeout=300,
      check=False)
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  last = bad.stderr.strip().splitlines()[-1]
  assert last.startswith("error: ") and "held-out images" in last, last
