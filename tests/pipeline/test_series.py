"""describe_neurons over a series of checkpoints: orbax steps in step
order, CLIP loaded and computed once, each checkpoint its own activations;
and the `jax-dissect series` command."""

import os
import shutil
import subprocess
import sys

import pytest

from jax_dissect import models
from jax_dissect.models import convert
from jax_dissect.pipeline import series
from tests import helpers
from tests.helpers import cli
from tests.helpers import pipeline_config


@pytest.fixture
def probe(tmp_path):
  folder = tmp_path / "probe"
  folder.mkdir()
  for name in sorted(os.listdir(pipeline_config.SAMPLE))[:12]:
    shutil.copy(os.path.join(pipeline_config.SAMPLE, name), folder / name)
  return folder


def _checkpoints(root):
  """Steps 2 and 10 hold the same weights (seed 0), step 30 others."""
  spec = models.get_model("resnet18_cifar100")
  for step, seed in ((10, 0), (2, 0), (30, 1)):
    convert.save_variables(root / str(step), spec.init_random(seed))
  return root


def test_checkpoint_steps_and_names(tmp_path):
  for d in ("10", "2", "notes", "3"):
    (tmp_path / d).mkdir()
  (tmp_path / "3" / "default").mkdir()
  steps = series.checkpoint_steps(str(tmp_path))
  assert [n for n, _ in steps] == ["step_2", "step_3", "step_10"]
  assert steps[1][1] == str(tmp_path / "3" / "default")  # One orbax item.
  assert series.weights_list(["a/w.safetensors", "b/w.safetensors"]) == [
      ("000_w", "a/w.safetensors"), ("001_w", "b/w.safetensors")]
  with pytest.raises(ValueError, match="no step subdirectories"):
    series.checkpoint_steps(str(tmp_path / "notes"))
  with pytest.raises(ValueError, match="names has 1 entries for 2"):
    series.weights_list(["a", "b"], ["x"])


def test_series_computes_clip_once(tmp_path, probe, log_lines):
  ckpt = _checkpoints(tmp_path / "ckpt")
  config = pipeline_config.config(
      tmp_path, d_probe=f"folder:{probe}", target_layers="layer4",
      concept_set=cli.concepts_file(str(tmp_path)))
  runs = series.describe_series(config, series.checkpoint_steps(str(ckpt)))
  assert [os.path.basename(r.path) for r in runs] == ["step_2", "step_10",
                                                      "step_30"]
  def count(prefix):
    return sum(l.startswith(prefix) for l in log_lines)

  # Once for the series; the later checkpoints read them.
  assert count("computing: CLIP text embeddings") == 1
  assert count("computing: CLIP image embeddings") == 1
  assert count("computing: concept activations P") == 1
  assert count("cache hit: CLIP image embeddings") == 2
  assert count("computing: activations") == 2  # Steps 2 and 10 share one.
  assert all("clip_load" not in r.config["stages"] for r in runs)
  p = {r.arrays["concept_activations"] for r in runs}
  assert len(p) == 1  # One P for the series.
  acts = [r.arrays["activations"]["layer4"] for r in runs]
  assert acts[0] == acts[1] != acts[2]  # Same weights, same entry.
  labels = [[n.description for n in r.neurons] for r in runs]
  assert labels[0] == labels[1] and labels[0] != labels[2]
  assert runs[2].config["target_weights"] == str(ckpt / "30")


def test_series_command(tmp_path, probe):
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)

  def series_cmd(*flags):
    return subprocess.run(
        [sys.executable, "-m", "jax_dissect", "series", *flags],
        cwd=helpers.REPO, env=env, capture_output=True, text=True,
        timeout=600)

  base = [f"--config={cli.SMOKE}", f"--d_probe=folder:{probe}",
          f"--concept_set={cli.concepts_file(str(tmp_path))}",
          "--target_layers=layer4", f"--activation_dir={tmp_path}/cache",
          f"--result_dir={tmp_path}/series"]
  proc = series_cmd(*base)
  assert proc.returncode == 2  # Bad usage.
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "error: give the series' weights with either --weights")
  proc = series_cmd(*base, "--weights=random,random", "--names=a,b",
                    f"--compare_out={tmp_path}/cmp")
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[:2] == [f"{tmp_path}/series/a", f"{tmp_path}/series/b"]
  assert lines[-1] == f"{tmp_path}/cmp/compare.html"
  agreement = cli.read_csv(f"{tmp_path}/cmp/compare_agreement.csv")
  assert [float(r["label_agreement"]) for r in agreement] == [1.0]
