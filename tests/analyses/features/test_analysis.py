"""The analysis `features` on runs: planted signal and null, outputs, the
SAE cache (resume, reuse), directions, and one-line errors before training.

Runs are tiny: planted superposition rows written as a run
(tests/helpers/planted_features.py) or the synthetic world
(tests/helpers/synthetic_run.py); per-position training on a real tiny
describe_neurons run is in test_positions.py.
"""

import json
import os

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect.analyses import features
from jax_dissect.analyses.features import analysis as analysis_lib
from jax_dissect.analyses.features import training
from jax_dissect.store import results as results_lib
from tests.helpers import planted_features as planted
from tests.helpers import synthetic_run

# 128 features, 2^19 training rows, B = 50: a few seconds once compiled.
OPTIONS = {"num_features": 128, "training_rows": 2**19,
           "num_permutations": 50}


@pytest.fixture(scope="module")
def data():
  return planted.superposition(n=4096, num_concepts=64, width=32)


@pytest.fixture(scope="module")
def planted_run(data, tmp_path_factory):
  path = planted.write_run(tmp_path_factory.mktemp("planted") / "run", data)
  return results_lib.load_run(path)


@pytest.fixture(scope="module")
def planted_output(planted_run):
  return analyses.run("features", planted_run, **OPTIONS)


def _named(rows, data, min_corr=0.5):
  """Planted concepts named by a feature whose held-out correlation with
  its label's presence is >= min_corr."""
  return {r["description"] for r in rows
          if r["correlation"] is not None and r["correlation"] >= min_corr}


def test_features_beat_neurons_on_planted_superposition(planted_output, data):
  """64 sparse concepts in 32 neurons: the SAE's features' labels predict
  held-out activations better than the neurons' and are significant."""
  (summary,) = planted_output.tables["features_summary"].rows
  rows = planted_output.tables["features"].rows
  assert len(rows) == 128 and summary["num_features"] == 128
  assert summary["source"] == "pooled" and summary["trained"]
  # Measured: variance explained 0.78, mean correlation of the features
  # 0.48, of the neurons 0.23; 127 of 128 features with q < 0.05; 58 of
  # the 64 concepts named by a feature at correlation >= 0.5.
  assert summary["fraction_of_variance_explained"] > 0.6, summary
  assert summary["mean_l0"] <= 4 and summary["dead_fraction"] < 0.1
  assert summary["mean_correlation"] > summary[
      "neuron_mean_correlation"] + 0.15, summary
  assert summary["significant_fraction"] > 0.8, summary
  assert len(_named(rows, data)) >= 40


def test_null_shuffled_p_names_nothing(data, tmp_path):
  """P's rows shuffled: the same SAE (same A, options and seed: training
  is seeded) labels nothing significantly."""
  rng = np.random.default_rng(1)
  path = planted.write_run(tmp_path / "run", data,
                           p=data.p[rng.permutation(len(data.p))])
  out = analyses.run("features", results_lib.load_run(path), **OPTIONS)
  (summary,) = out.tables["features_summary"].rows
  # Measured: mean correlation 0.02, 0 of 128 with q < 0.05.
  assert abs(summary["mean_correlation"]) < 0.1, summary
  assert summary["significant_fraction"] < 0.1, summary
  assert not _named(out.tables["features"].rows, data)


def test_outputs_and_manifest(planted_output, planted_run, tmp_path):
  paths = results_lib.write_analysis(planted_output, str(tmp_path))
  assert set(paths) == {"features.csv", "features_summary.csv",
                        "features_summary.json", "features.png",
                        "features.outputs.json"}
  entries = {e.file: e for e in results_lib.analysis_outputs(str(tmp_path))}
  table = entries["features.csv"]
  assert table.per_neuron and table.basis == "sae" and table.show
  assert entries["features_summary.csv"].basis == ""
  rows = results_lib.read_table(paths["features.csv"])
  assert tuple(rows[0]) == features.COLUMNS
  ids = set(planted_run.image_ids)
  for r in rows:
    assert r["unit"] == r["feature"]
    top = json.loads(r["top_images"])
    assert len(top) <= results_lib.TOP_IMAGES and set(top) <= ids
    assert 0.0 <= float(r["frequency"]) <= 1.0
  # A feature's top images are where it fires most.
  sae = features.load_sae(planted_output.tables["features_summary"].rows[0][
      "sae_file"])
  codes = sae.encode(planted_run.activations("layer"))
  f = int(rows[5]["unit"])
  top = [planted_run.image_ids.index(i) for i in json.loads(
      rows[5]["top_images"])]
  assert np.all(codes[top, f] >= np.sort(codes[:, f])[-len(top)])
  summary = json.loads(open(paths["features_summary.json"]).read())[0]
  for key in ("fraction_of_variance_explained", "mean_l0", "dead_fraction",
              "mean_correlation", "neuron_mean_correlation"):
    assert key in summary


@pytest.fixture
def world_run(tmp_path):
  path = synthetic_run.write_results(str(tmp_path / "run"),
                                     synthetic_run.make_world())
  return results_lib.load_run(path)


SMALL = {"num_features": 16, "training_rows": 2048, "num_permutations": 10}


def _count_training(monkeypatch, fail_on=None):
  """Counts train_sae calls; the call number `fail_on` is killed."""
  calls = []
  real = training.train_sae

  def counted(*args, **kwargs):
    calls.append(1)
    if fail_on is not None and len(calls) == fail_on:
      raise KeyboardInterrupt("killed")
    return real(*args, **kwargs)

  monkeypatch.setattr(training, "train_sae", counted)
  return calls


def test_a_killed_run_resumes_and_a_second_run_trains_nothing(
    world_run, monkeypatch):
  calls = _count_training(monkeypatch, fail_on=2)
  with pytest.raises(KeyboardInterrupt):  # Killed on the second layer.
    analyses.run("features", world_run, **SMALL)
  assert len(calls) == 2
  saved = os.listdir(os.path.join(world_run.cache_dir(), "sae"))
  assert len([f for f in saved if f.endswith(".npz")]) == 1
  calls = _count_training(monkeypatch)
  first = analyses.run("features", world_run, **SMALL)
  assert len(calls) == 1  # Only the layer the kill lost.
  assert [s["trained"] for s in first.tables["features_summary"].rows] == [
      False, True]
  second = analyses.run("features", world_run, **SMALL)
  assert len(calls) == 1  # Nothing trained.
  assert first.tables["features"].rows == second.tables["features"].rows
  # Changed options train a new SAE.
  analyses.run("features", world_run, **{**SMALL, "num_features": 8},
               layers=("fc",))
  assert len(calls) == 2


def _error(run, **options):
  with pytest.raises(ValueError) as e:
    analyses.run("features", run, **options)
  message = str(e.value)
  assert "\n" not in message and len(message) <= 300, message
  return message


def test_bad_input_is_one_line_before_training(world_run, tmp_path,
                                               monkeypatch):
  calls = _count_training(monkeypatch)
  assert "num_features=-1 must be >= 1" in _error(world_run, num_features=-1)
  assert "k=9 is larger than num_features=8 of layer 'layer4'" in _error(
      world_run, num_features=8, k=9)
  assert "layer 'layer9' is not in the results" in _error(world_run,
                                                          layers=("layer9",))
  wrong = tmp_path / "dirs.npy"
  np.save(wrong, np.ones((3, 5), np.float32))
  message = _error(world_run, directions=str(wrong))
  assert "have width 5 but the layers' widths are layer4 8, fc 8" in message
  assert "no such file" in _error(world_run,
                                  directions=str(tmp_path / "none.npy"))
  assert "feature_pool='sum'" in _error(world_run, feature_pool="sum")
  assert "nothing to do" in _error(world_run, sae=False)
  # The synthetic run cannot be re-run on its images: said before training.
  assert "cannot rebuild" in _error(world_run, positions=True)
  assert not calls


def test_directions_are_labelled_with_their_concepts(data, planted_run,
                                                     tmp_path):
  """The planted directions (64, 32) from a .npy file name their own
  concepts; random directions name none."""
  path = tmp_path / "planted.npy"
  np.save(path, data.directions)
  out = analyses.run("features", planted_run, sae=False, directions=str(path),
                     num_permutations=20)
  assert set(out.tables) == {"directions", "directions_summary"}
  rows = out.tables["directions"].rows
  assert out.tables["directions"].basis == "directions"
  hits = sum(r["description"] == f"c{r['direction']}" for r in rows)
  # Measured: 64 of 64.
  assert hits >= 58, hits
  rng = np.random.default_rng(0)
  np.save(path, rng.standard_normal((64, 32)).astype(np.float32))
  out = analyses.run("features", planted_run, sae=False, directions=str(path),
                     num_permutations=20)
  rows = out.tables["directions"].rows
  # Measured: 2 (chance: 1 of 64 each).
  assert sum(r["description"] == f"c{r['direction']}" for r in rows) <= 5


def test_linear_explanations_when_asked(world_run):
  out = analyses.run("features", world_run, layers=("layer4",), linear=True,
                     **SMALL)
  row = out.tables["features"].rows[0]
  assert tuple(row)[-2:] == analysis_lib.LINEAR_COLUMNS
  assert "mean_linear_correlation" in out.tables["features_summary"].rows[0]


def test_a_damaged_saved_sae_is_trained_again(world_run, monkeypatch):
  first = analyses.run("features", world_run, layers=("fc",), **SMALL)
  path = first.tables["features_summary"].rows[0]["sae_file"]
  with open(path, "r+b") as f:
    f.truncate(100)
  calls = _count_training(monkeypatch)
  again = analyses.run("features", world_run, layers=("fc",), **SMALL)
  assert len(calls) == 1 and again.tables["features_summary"].rows[0][
      "trained"]
  # Seeded: the same model as before.
  assert again.tables["features"].rows == first.tables["features"].rows
