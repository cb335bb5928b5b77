"""describe_neurons as 2 processes (jax.distributed on 127.0.0.1, gloo CPU
collectives) against 1 process: same arrays and labels, caches shared both
ways, a killed process resumed, a lost peer reported in one line."""

import glob
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from tests.helpers import cli as describe_cli

COMMON = ["--config.max_images=40", "--config.batch_size=4",
          "--config.shard_images=4"]


def _start(tmp, result, cache, *extra, process_id, port, num_processes=2):
  argv = describe_cli.args(
      result, cache, f"--concept_set={tmp / 'concepts.txt'}", *COMMON,
      f"--coordinator_address=127.0.0.1:{port}",
      f"--num_processes={num_processes}", f"--process_id={process_id}",
      *extra)
  return subprocess.Popen(argv, cwd=describe_cli.REPO, env=describe_cli.env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)


def _run_two(tmp, result, cache, *extra):
  port = describe_cli.free_port()
  procs = [_start(tmp, result, cache, *extra, process_id=i, port=port)
           for i in range(2)]
  outs = [p.communicate(timeout=600)[1] for p in procs]
  for p, err in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return outs


def _run_one(tmp, result, cache, *extra):
  done = describe_cli.run(describe_cli.args(
      result, cache, f"--concept_set={tmp / 'concepts.txt'}", *COMMON,
      *extra))
  assert done.returncode == 0, done.stderr[-3000:]
  return done.stderr


def _drop_labels(cache):
  for path in glob.glob(str(cache / "labels" / "*")):
    os.remove(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """A 1-process run and its cache."""
  tmp = tmp_path_factory.mktemp("one")
  describe_cli.concepts_file(tmp)
  _run_one(tmp, tmp / "results", tmp / "cache")
  return tmp


def _same_csv(a, b):
  with open(a, "rb") as fa, open(b, "rb") as fb:
    return fa.read() == fb.read()


def test_two_processes_equal_one(reference, tmp_path):
  describe_cli.concepts_file(tmp_path)
  ref = reference / "results"
  # Two processes, kernels on the mesh of both processes' devices.
  _run_two(tmp_path, tmp_path / "two", tmp_path / "cache")
  config = describe_cli.read_json(tmp_path / "two" / "config.json")
  assert config["processes"] == 2
  for stage in ("probe_scan", "clip_text", "clip_images", "activations"):
    assert config["stages"][stage]["processes"] == 2, stage
  assert config["stages"]["activations"]["devices"] == 2
  assert config["stages"]["similarity_layer4"]["devices"] == 2
  assert config["stages"]["activations"]["images"] == 20  # Half each.
  # The arrays are those of one process, bit for bit.
  one = describe_cli.cached_arrays(ref)
  two = describe_cli.cached_arrays(tmp_path / "two")
  for name, want in one.items():
    np.testing.assert_array_equal(two[name], want, err_msg=name)
  # Same arrays, and the kernel on the 2 processes' devices gives the bits
  # of one device: the same descriptions.csv, byte for byte.
  assert _same_csv(tmp_path / "two" / "descriptions.csv",
                   ref / "descriptions.csv")

  # The cache written by 2 processes, reused by 1: identical results.
  _drop_labels(tmp_path / "cache")
  log = _run_one(tmp_path, tmp_path / "one", tmp_path / "cache")
  computed = [l for l in log.splitlines() if "computing:" in l]
  assert all("labels of" in l for l in computed), computed
  assert _same_csv(tmp_path / "one" / "descriptions.csv",
                   ref / "descriptions.csv")

  # And vice versa: a 1-process cache reused by 2 processes gives the same
  # descriptions.csv, byte for byte.
  shutil.copytree(reference / "cache", tmp_path / "cache1")
  _drop_labels(tmp_path / "cache1")
  _run_two(tmp_path, tmp_path / "two_reused", tmp_path / "cache1")
  assert _same_csv(tmp_path / "two_reused" / "descriptions.csv",
                   ref / "descriptions.csv")


def test_killed_process_is_reported_and_the_run_resumed(reference, tmp_path):
  describe_cli.concepts_file(tmp_path)
  cache = tmp_path / "cache"
  port = describe_cli.free_port()
  procs = [_start(tmp_path, tmp_path / "killed", cache, process_id=i,
                  port=port) for i in range(2)]
  parts = str(cache / "activations" / "*.parts" / "*.npy")
  deadline = time.monotonic() + 300
  # Kill process 1 once a shard of every layer is saved.
  while len(glob.glob(parts)) < 5 and procs[0].poll() is None:
    assert time.monotonic() < deadline, "no activation shard was saved"
    time.sleep(0.02)
  procs[1].send_signal(signal.SIGKILL)
  procs[1].communicate()
  started = time.monotonic()
  err = procs[0].communicate(timeout=300)[1]
  # The survivor stops at its next collective with one clear line.
  assert procs[0].returncode not in (0, None), err[-3000:]
  assert time.monotonic() - started < 120
  errors = describe_cli.error_lines(err)
  assert len(errors) == 1 and "lost contact" in errors[0], err[-3000:]
  assert "Traceback" not in err and "Check failure" not in err
  assert not os.path.exists(tmp_path / "killed" / "descriptions.csv")
  saved = len(glob.glob(parts))
  assert saved >= 5

  # The rerun resumes from the shards both processes saved, with 2
  # processes (on a copy: the same again) or with 1, and ends with the
  # 1-process result.
  shutil.copytree(cache, tmp_path / "cache_copy")
  logs = _run_two(tmp_path, tmp_path / "resumed2", cache)
  assert any("resuming:" in log for log in logs)
  assert not glob.glob(parts)
  assert _same_csv(tmp_path / "resumed2" / "descriptions.csv",
                   reference / "results" / "descriptions.csv")
  copy_parts = str(tmp_path / "cache_copy" / "activations" / "*.parts" /
                   "*.npy")
  assert len(glob.glob(copy_parts)) == saved
  log = _run_one(tmp_path, tmp_path / "resumed1", tmp_path / "cache_copy")
  assert "resuming:" in log
  assert not glob.glob(copy_parts)
  assert _same_csv(tmp_path / "resumed1" / "descriptions.csv",
                   reference / "results" / "descriptions.csv")
