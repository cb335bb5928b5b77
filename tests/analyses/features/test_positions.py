"""Per-position SAE training on a real tiny describe_neurons run: the
target re-run on the probe images, maps cached only when asked (after a
size check), held in memory or streamed otherwise."""

import os
import pathlib
import shutil

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect import pipeline
from jax_dissect.analyses.features import positions
from jax_dissect.analyses.features import training
from jax_dissect.store import cache as cache_lib
from tests.helpers import pipeline_config

# Small and fast: 32 features, about two passes over layer4's 24 x 4 x 4
# positions.
OPTIONS = {"positions": True, "layers": ("layer4",), "num_features": 32,
           "training_rows": 768, "batch_size": 256, "num_permutations": 10}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """A 24-image run of a random CIFAR ResNet-18 (layer1, layer4)."""
  tmp = tmp_path_factory.mktemp("positions")
  (tmp / "probe").mkdir()
  for name in sorted(os.listdir(pipeline_config.SAMPLE))[:24]:
    shutil.copy(os.path.join(pipeline_config.SAMPLE, name), tmp / "probe")
  concepts = tmp / "concepts.txt"
  concepts.write_text("dog\ncat\ncar\ntree\nwater\nsky\ngrass\nbird\n")
  return pipeline.describe_neurons(pipeline_config.config(
      pathlib.Path(tmp), d_probe=f"folder:{tmp / 'probe'}",
      concept_set=str(concepts)))


def test_re_run_maps_are_the_run_s_pooled_activations(run):
  """The maps the target gives again, mean-pooled, are the run's A (the
  run pools conv maps by their mean)."""
  target = positions.RunTarget(run)
  maps = positions.layer_maps(target, {"layer4": "memory"})["layer4"].load()
  assert maps.array.shape == (24, 4, 4, 512) and maps.num_rows == 24 * 16
  np.testing.assert_allclose(maps.array.mean(axis=(1, 2)),
                             run.activations("layer4"), atol=1e-4)


def test_cached_maps_and_saes_make_a_rerun_train_and_run_nothing(
    run, monkeypatch):
  out = analyses.run("features", run, cache_positions=True, **OPTIONS)
  (summary,) = out.tables["features_summary"].rows
  assert summary["source"] == "positions" and summary["trained"]
  assert summary["training_rows"] >= 768
  assert summary["feature_pool"] == "max"
  assert len(out.tables["features"].rows) == 32
  cached = os.listdir(os.path.join(run.cache_dir(), "positions"))
  assert any(f.endswith(".npy") for f in cached)

  def no_target(*args, **kwargs):
    raise AssertionError("the target was run again")

  def no_training(*args, **kwargs):
    raise AssertionError("an SAE was trained again")

  monkeypatch.setattr(positions.RunTarget, "batches", no_target)
  monkeypatch.setattr(training, "train_sae", no_training)
  again = analyses.run("features", run, cache_positions=True, **OPTIONS)
  assert not again.tables["features_summary"].rows[0]["trained"]
  assert again.tables["features"].rows == out.tables["features"].rows


def test_maps_too_large_to_cache_are_refused_in_one_line(run, monkeypatch):
  # Training would raise a TypeError; the target is not run either.
  monkeypatch.setattr(training, "train_sae", None)
  monkeypatch.setattr(positions.RunTarget, "batches", None)
  with pytest.raises(ValueError) as e:
    analyses.run("features", run, cache_positions=True, max_cache_gb=0.001,
                  **{**OPTIONS, "layers": ("layer1",)})
  message = str(e.value)
  assert "\n" not in message and len(message) <= 300, message
  # 24 images x 32 x 32 positions x 64 channels x 4 bytes.
  assert message.startswith("cache_positions: the per-position maps "
                            "(layer1 6.29 MB) need 6.29 MB, more than "
                            "max_cache_gb=0.001"), message


def test_maps_larger_than_memory_are_streamed(run, monkeypatch):
  target = positions.RunTarget(run)
  cache = cache_lib.ArrayCache(run.cache_dir())
  assert positions.plan(target, ["layer1", "layer4"], cache_positions=False,
                        memory_bytes=10**6, max_cache_bytes=0,
                        cache=cache) == {"layer1": "stream",
                                         "layer4": "memory"}
  passes = []
  real = positions.RunTarget.batches

  def counted(self, layers, ranges=None):
    passes.append(tuple(layers))
    return real(self, layers, ranges)

  monkeypatch.setattr(positions.RunTarget, "batches", counted)
  out = analyses.run("features", run, memory_gb=1e-4,
                     **{**OPTIONS, "seed": 1})
  (summary,) = out.tables["features_summary"].rows
  assert summary["trained"] and summary["source"] == "positions"
  # Two training epochs, the fit figures and the labels each read the
  # maps again (plus the first batch the training peeks at).
  assert len(passes) >= 4, passes
