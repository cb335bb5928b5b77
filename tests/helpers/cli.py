"""Running scripts/describe_neurons.py in subprocesses, for the CLI tests."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np

from tests import helpers

REPO = helpers.REPO
SCRIPT = os.path.join(REPO, "scripts", "describe_neurons.py")
SMOKE = os.path.join(REPO, "configs", "resnet18_cifar100.py") + ":smoke"
CONCEPTS = ("dog\ncat\ncar\ntree\nwater\nsky\nhouse\nperson\nboat\ngrass\n"
            "road\nbird\n")


def env(host_devices=1, **extra):
  """The environment of a run on `host_devices` CPU devices (and `extra`
  variables)."""
  out = dict(os.environ, **extra)
  out.pop("XLA_FLAGS", None)
  if host_devices > 1:
    out["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={host_devices}")
  out["PYTHONUNBUFFERED"] = "1"
  return out


def args(result_dir, cache_dir, *extra):
  return [sys.executable, SCRIPT, f"--config={SMOKE}",
          f"--result_dir={result_dir}", f"--activation_dir={cache_dir}",
          "--alsologtostderr", *extra]


def run(argv, host_devices=1, timeout=600, **extra_env):
  return subprocess.run(argv, cwd=REPO, env=env(host_devices, **extra_env),
                        capture_output=True, text=True, timeout=timeout)


def concepts_file(directory):
  path = os.path.join(directory, "concepts.txt")
  with open(path, "w", encoding="utf-8") as f:
    f.write(CONCEPTS)
  return path


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def read_csv(path):
  with open(path, encoding="utf-8") as f:
    return list(csv.DictReader(f))


def read_json(path):
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def neurons(result_dir):
  with open(os.path.join(result_dir, "neurons.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def cached_arrays(result_dir):
  """{name: array} of a run's cached P, embeddings and activations."""
  arrays = read_json(os.path.join(result_dir, "arrays.json"))
  out = {k: np.load(v) for k, v in arrays.items()
         if isinstance(v, str) and k != "cache_root"}
  out.update({f"activations/{l}": np.load(v)
              for l, v in arrays["activations"].items()})
  return out


def assert_same_labels(got_dir, want_dir, tie=2e-5, atol=2e-5):
  """Labels equal but where two concepts are within `tie` in `want_dir`'s
  run (a few float32 steps of the scores: rounding decides such ties);
  similarities equal to `atol`. Returns the number of labels that differ."""
  got, want = neurons(got_dir), neurons(want_dir)
  assert len(got) == len(want)
  for g, w in zip(got, want):
    assert abs(g["similarity"] - w["similarity"]) <= atol, (g, w)
    if g["description"] != w["description"]:
      scores = {a["concept"]: a["similarity"] for a in w["alternatives"]}
      assert abs(w["similarity"] - scores.get(g["description"], -1e9)
                 ) <= tie, (g, w)
  return sum(g["description"] != w["description"] for g, w in zip(got, want))


def error_lines(stderr):
  return [l for l in stderr.splitlines() if l.startswith("error:")]
