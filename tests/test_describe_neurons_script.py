"""scripts/describe_neurons.py as a subprocess: smoke run, cache, resume."""

import glob
import math
import os
import signal
import subprocess
import time

import pytest

from configs import shared_data

import describe_cli

REPO = describe_cli.REPO
BRODEN = shared_data.path("concepts", "broden_labels_clean.txt")
SMOKE_NEURONS = 64 + 64 + 128 + 256 + 512
_env = describe_cli.env  # One CPU device, as a user's run.
_run = describe_cli.run
_csv = describe_cli.read_csv


def _args(tmp, name, *extra):
  return describe_cli.args(tmp / name, tmp / "cache", *extra)


def _log_lines(stderr, tag):
  return [l for l in stderr.splitlines() if tag in l]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("smoke")
  first = _run(_args(tmp, "run1"))
  assert first.returncode == 0, first.stderr[-3000:]
  return tmp, first


def test_smoke_run_writes_one_row_per_neuron(smoke_run):
  tmp, _ = smoke_run
  rows = _csv(tmp / "run1" / "descriptions.csv")
  assert len(rows) == SMOKE_NEURONS
  per_layer = {}
  for r in rows:
    per_layer[r["layer"]] = per_layer.get(r["layer"], 0) + 1
  assert per_layer == {"conv1": 64, "layer1": 64, "layer2": 128,
                       "layer3": 256, "layer4": 512}
  with open(BRODEN, encoding="utf-8") as f:
    concepts = {line.strip() for line in f if line.strip()}
  assert {r["description"] for r in rows} <= concepts
  assert all(math.isfinite(float(r["similarity"])) for r in rows)


def test_second_run_takes_every_array_from_the_cache(smoke_run):
  tmp, first = smoke_run
  assert _log_lines(first.stderr, "computing:")
  second = _run(_args(tmp, "run2"))
  assert second.returncode == 0, second.stderr[-3000:]
  assert _log_lines(second.stderr, "computing:") == []
  hits = _log_lines(second.stderr, "cache hit:")
  # Probe scan, text embeddings, image embeddings, P, 5 activations, 5 labels.
  assert len(hits) == 1 + 1 + 1 + 1 + 5 + 5, "\n".join(hits)
  assert _csv(tmp / "run2" / "descriptions.csv") == _csv(
      tmp / "run1" / "descriptions.csv")


def test_killed_run_resumes_with_the_same_result(smoke_run, tmp_path):
  ref_tmp, _ = smoke_run
  args = _args(tmp_path, "killed", "--config.shard_images=100")
  proc = subprocess.Popen(args, cwd=REPO, env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
  pattern = str(tmp_path / "cache" / "activations" / "*.parts" / "*.npy")
  deadline = time.monotonic() + 300
  # Kill once the first shard of all 5 layers is saved.
  while len(glob.glob(pattern)) < 5 and proc.poll() is None:
    assert time.monotonic() < deadline, "no activation shard was saved"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  assert proc.returncode == -signal.SIGKILL, "the run ended before the kill"
  assert not os.path.exists(tmp_path / "killed" / "descriptions.csv")
  saved = len(glob.glob(pattern))
  assert saved >= 1

  resumed = _run(args)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  # Everything before the activations came from the cache; the activations
  # resumed from the saved shards.
  assert _log_lines(resumed.stderr, "cache hit: CLIP image embeddings")
  started = _log_lines(resumed.stderr, "computing: activations")
  assert len(started) == 1 and f"resuming: {saved} of 50" in started[0], (
      started)
  assert not glob.glob(pattern)  # Shards were joined and removed.
  assert _csv(tmp_path / "killed" / "descriptions.csv") == _csv(
      ref_tmp / "run1" / "descriptions.csv")


@pytest.mark.parametrize("flag,expected", [
    ("--target_model=resnet77", "unknown model 'resnet77'; valid models:"),
    ("--target_layers=layer9", "unknown layer(s): 'layer9'"),
    ("--similarity_fn=cosine", "similarity_fn='cosine' is not valid; allowed:"),
    ("--d_probe=places", "unknown probe data set 'places'; valid:"),
    ("--concept_set=/no/such/file.txt", "/no/such/file.txt"),
])
def test_bad_input_is_one_line(tmp_path, flag, expected):
  result = _run(_args(tmp_path, "bad", flag), timeout=300)
  assert result.returncode == 2
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
  assert "Traceback" not in result.stderr
