"""scripts/describe_neurons.py as a subprocess: smoke run, cache, resume."""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import shared_data
from tests.helpers import cli as describe_cli

REPO = describe_cli.REPO
SCRIPT = describe_cli.SCRIPT
SMOKE = describe_cli.SMOKE
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
  # Every compiled program is kept (on a quiet machine the smoke model
  # compiles in less than the default threshold).
  first = _run(_args(tmp, "run1"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
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
  # The first run's compiled programs were kept for the second (on by
  # default; JAX's persistent compilation cache in the cache directory).
  assert os.listdir(tmp / "cache" / "jax_compilation_cache")


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


def test_readme_nested_override_sets_top_k(smoke_run):
  """The README's `--config.similarity_kwargs.top_k=50`: only the labels
  are recomputed, with top_k=50."""
  tmp, _ = smoke_run
  result = _run(_args(tmp, "top_k50", "--config.similarity_kwargs.top_k=50"))
  assert result.returncode == 0, result.stderr[-3000:]
  with open(tmp / "top_k50" / "config.json", encoding="utf-8") as f:
    assert json.load(f)["similarity_kwargs"] == {"top_k": 50}
  computed = _log_lines(result.stderr, "computing:")
  assert len(computed) == 5 and all("labels of" in l for l in computed), (
      computed)


@pytest.mark.parametrize("flags,expected", [
    (["--config=configs/nope.py"],
     "--config=configs/nope.py: no such config file 'configs/nope.py'"),
    (["--config=configs/nope.py", "--config.batch_size=3"],
     "no such config file"),
    ([f"--config={SMOKE[:-len(':smoke')]}:bogus"],
     "cannot load it: ValueError: unknown config argument 'bogus'"),
    ([f"--config={SMOKE}", "--config.xyz=1"],
     "--config.xyz=1: the config has no option 'xyz'"),
    ([f"--config={SMOKE}", "--config.similarity_kwargs.topk=50"],
     "the config has no option 'similarity_kwargs.topk'; did you mean top_k"),
    ([f"--config={SMOKE}", "--config.similarity_kwargs.top_k=abc"],
     "flag --config.similarity_kwargs.top_k=abc: invalid literal for int()"),
    ([f"--config={SMOKE}", "--config.similarity_kwargs.top_k=0"], "top_k=0"),
    ([f"--config={SMOKE}", "--result_dir=FILE"], "is a file, not a "
                                                 "directory"),
    ([f"--config={SMOKE}", "--result_dir=/sys/results"],
     "result_dir='/sys/results' cannot be created in '/sys'"),
    ([f"--config={SMOKE}", "--concept_activations=FILE"],
     "is not a .npy array file"),
    # Issue 25: a second --config that does not load was a traceback (or
    # named the first config); an unknown option listed all 35 (> 300).
    ([f"--config={SMOKE}", "--config=BADCONFIG"],
     "--config=BADCONFIG: cannot load it: invalid syntax"),
    ([f"--config={SMOKE}", "--config=configs/nope.py"],
     "--config=configs/nope.py: no such config file"),
    ([f"--config={SMOKE}", "--config.xyzzy=1"], "(36 in all)"),
])
def test_config_and_path_errors_are_one_line_and_early(tmp_path, flags,
                                                       expected):
  """Missing config files, unknown or bad --config.<key> overrides and
  unusable paths end in one `error:` line, before any stage runs: within
  seconds (the smoke run they would otherwise follow takes a minute)."""
  (tmp_path / "file.txt").write_text("0.1 0.2\n")
  (tmp_path / "bad_config.py").write_text("def get_config(:\n")
  bad = str(tmp_path / "bad_config.py")
  flags = [f.replace("FILE", str(tmp_path / "file.txt")).replace(
      "BADCONFIG", bad) for f in flags]
  expected = expected.replace("BADCONFIG", bad)
  t0 = time.monotonic()
  result = _run([sys.executable, SCRIPT, *flags, "--alsologtostderr",
                 f"--activation_dir={tmp_path / 'cache'}"], timeout=300)
  seconds = time.monotonic() - t0
  assert result.returncode != 0
  assert seconds < 30, seconds  # Python and JAX start in ~3 s.
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
  assert len(errors[0]) <= len("error: ") + 300, errors[0]
  assert not _log_lines(result.stderr, "stage "), result.stderr[-2000:]


def test_activation_dir_that_is_a_file_is_one_line(tmp_path):
  """The compilation cache goes into activation_dir: a file there was an
  OSError line without the option's name (robustness probe)."""
  (tmp_path / "a_file").write_text("x")
  result = _run([sys.executable, SCRIPT, f"--config={SMOKE}",
                 f"--activation_dir={tmp_path / 'a_file'}"], timeout=300)
  assert result.returncode == 2, result.stderr[-2000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 1, result.stderr[-2000:]
  assert "activation_dir=" in errors[0] and "is a file, not a directory" in (
      errors[0]), errors[0]
