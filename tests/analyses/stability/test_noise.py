"""Pixel-noise robustness of labels, and describe_neurons' score_labels."""

import os
import pathlib
import shutil

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect import pipeline
from jax_dissect.analyses import stability as stability_analysis
from jax_dissect.analyses.stability import noise as robustness
from jax_dissect.data import preprocess
from jax_dissect.store import results as results_lib
from tests.helpers import pipeline_config

LAYERS = ["layer1", "layer4"]


def test_noise_is_in_unit_pixel_space_clipped_and_per_image():
  transform = preprocess.ImageTransform(resize=8, crop=8)
  rng = np.random.default_rng(0)
  x01 = rng.uniform(0.1, 0.9, (3, 8, 8, 3)).astype(np.float32)
  x01[0, 0, 0] = 0.0  # Clipped at 0 after noise.
  mean, std = np.asarray(transform.mean), np.asarray(transform.std)
  pixels = ((x01 - mean) / std).astype(np.float32)
  noisy = robustness.add_pixel_noise(pixels, transform, 0.02, [5, 6, 7])
  back = noisy * std + mean
  assert back.min() >= -1e-6 and back.max() <= 1 + 1e-6
  delta = (back - x01)[1:]
  assert abs(delta.std() - 0.02) < 0.004 and abs(delta.mean()) < 0.004
  # The noise of an image depends on its index and seed, not its batch.
  alone = robustness.add_pixel_noise(pixels[1:2], transform, 0.02, [6])
  np.testing.assert_array_equal(alone, noisy[1:2])
  other = robustness.add_pixel_noise(pixels[1:2], transform, 0.02, [6],
                                     seed=1)
  assert not np.allclose(other, alone)
  np.testing.assert_array_equal(
      robustness.add_pixel_noise(pixels, transform, 0.0, [0, 1, 2]), pixels)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 24-image describe_neurons run with score_labels=True."""
  tmp = tmp_path_factory.mktemp("robust")
  (tmp / "probe").mkdir()
  for name in sorted(os.listdir(pipeline_config.SAMPLE))[:24]:
    shutil.copy(os.path.join(pipeline_config.SAMPLE, name), tmp / "probe")
  concepts = tmp / "concepts.txt"
  concepts.write_text("dog\ncat\ncar\ntree\nwater\nsky\ngrass\nbird\n")
  config = pipeline_config.config(
      pathlib.Path(tmp), d_probe=f"folder:{tmp / 'probe'}",
      concept_set=str(concepts), target_layers=",".join(LAYERS),
      score_labels=True)
  return pipeline.describe_neurons(config)


def test_score_labels_writes_the_scores(run):
  rows = results_lib.read_table(os.path.join(run.analysis_dir(),
                                             "explanation_scores.csv"))
  assert len(rows) == 64 + 512
  assert all(0 < float(r["p_value"]) <= 1 for r in rows)
  assert [r["description"] for r in rows] == [n.description
                                              for n in run.neurons]
  assert "score_labels" in run.config["timings_s"]


def test_score_labels_checks_the_split_first(tmp_path):
  probe = tmp_path / "probe"
  probe.mkdir()
  for name in sorted(os.listdir(pipeline_config.SAMPLE))[:12]:
    shutil.copy(os.path.join(pipeline_config.SAMPLE, name), probe)
  config = pipeline_config.config(
      tmp_path, d_probe=f"folder:{probe}",
      concept_set=str(tmp_path / "concepts.txt"), score_labels=True)
  (tmp_path / "concepts.txt").write_text("dog\ncat\n")
  with pytest.raises(ValueError, match="score_labels: split='half' of 12 "
                     "images leaves 6 held-out images"):
    pipeline.describe_neurons(config)
  assert not os.path.exists(tmp_path / "results")


def test_zero_noise_reproduces_the_run(run):
  acts, p = stability_analysis.noisy_arrays(run, LAYERS, std=0.0)
  for layer in LAYERS:
    np.testing.assert_allclose(acts[layer], run.activations(layer),
                               rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(p, run.concept_activations(), atol=1e-6)
  rows, summary = stability_analysis.noise_robustness(run, LAYERS, std=0.0)
  assert all(s["labels_kept_under_noise"] == 1.0 for s in summary.values())


def test_noise_changes_some_labels_and_is_reported(run):
  out = analyses.run("stability", run, num_resamples=2, top_ks=(5,),
                     layers=tuple(LAYERS), noise_std=0.2)
  summary = {s["layer"]: s for s in out.tables["stability_summary"].rows}
  rows = out.tables["stability"].rows
  for layer in LAYERS:
    mine = [r for r in rows if r["layer"] == layer]
    kept = np.mean([r["kept_under_noise"] for r in mine])
    assert summary[layer]["labels_kept_under_noise"] == kept
    assert summary[layer]["noise_std"] == 0.2
  # Strong noise flips labels of a random network's deep layer.
  assert summary["layer4"]["labels_kept_under_noise"] < 1.0
  assert any("labels kept under pixel noise" in l for l in out.summary)


def test_noise_needs_clip_and_valid_std(run, tmp_path):
  with pytest.raises(ValueError, match="noise_std=-0.1 must be >= 0"):
    analyses.run("stability", run, noise_std=-0.1)
  given_p = results_lib.Run(**{**run.__dict__, "config": {
      **run.config, "concept_activations": "p.npy"}})
  with pytest.raises(ValueError, match="needs a run whose P came from CLIP"):
    stability_analysis.noisy_arrays(given_p, LAYERS, std=0.02)
