"""One cache, many processes: concurrent runs and kill -9 at random points.

Both experiments run describe_neurons on 16 of the shared photos (random
CIFAR ResNet-18, tiny random CLIP with the real tokenizer built into the
cache, 4-image shards) through tests/cache_stress.py, which forks a process
per run, and compare every run's labels with an uninterrupted reference run.
"""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from configs import common
from configs import shared_data
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import integrity
from tests import helpers

REPO = helpers.REPO
RUNNER = os.path.join(REPO, "tests", "store", "cache_stress.py")
RESULT_FILES = ("descriptions.csv", "neurons.jsonl", "concepts.txt",
                "image_ids.txt")


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
  """describe_neurons options of a small, fast run."""
  root = tmp_path_factory.mktemp("stress_inputs")
  probe = root / "probe"
  probe.mkdir()
  sample = shared_data.path("imagenet_sample")
  for name in sorted(os.listdir(sample))[:16]:
    shutil.copy(os.path.join(sample, name), probe / name)
  concepts = root / "concepts.txt"
  concepts.write_text("dog\ncat\ncar\ntree\nwater\nsky\ngrass\nred\nwood\n"
                      "metal\nstriped\nbird\n", encoding="utf-8")
  return str(root / "jax_cache"), {
      "target_model": "resnet18_cifar100", "target_weights": "random",
      "target_layers": "layer1,layer4", "clip_model": "random",
      "clip_tokenizer": common.CLIP_BPE,
      "clip_config": {**common.small_clip_config(width=32, layers=1,
                                                 image_size=32),
                      "projection_dim": 16},
      "d_probe": f"folder:{probe}", "concept_set": str(concepts),
      "batch_size": 4, "shard_images": 4, "similarity_kwargs": {"top_k": 5},
  }


def _stress(tmp_path, run_config, **experiment):
  jax_cache, config = run_config
  spec = tmp_path / "spec.json"
  spec.write_text(json.dumps({"config": config, "work": str(tmp_path),
                              "jax_cache": jax_cache, **experiment}))
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, RUNNER, str(spec)], cwd=REPO,
                        env=env, capture_output=True, text=True,
                        timeout=900, check=False)
  errors = "\n".join(l for l in proc.stderr.splitlines()
                     if "child_error" in l or "rror" in l)
  assert proc.returncode == 0, errors[-3000:]
  records = [json.loads(l) for l in proc.stdout.splitlines()
             if l.startswith("{")]
  assert records[0]["run"] == "reference" and records[0]["status"] == 0
  return records[1:], errors


def _results(result_dir):
  return {name: open(os.path.join(result_dir, name), "rb").read()
          for name in RESULT_FILES}


def orphans(cache_dir):
  """What a cache holds beyond whole entries: temporaries anywhere, shard
  directories, records without their entry, entries without their record,
  and entries that fail their checks (lock files are kept on purpose)."""
  found = []
  cache = cache_lib.ArrayCache(cache_dir, clean=False)
  for path in glob.glob(os.path.join(cache_dir, "**", "*"), recursive=True):
    if os.path.basename(path).startswith(".tmp-"):
      found.append(path)
  for kind in os.listdir(cache_dir):
    if kind in ("locks", "tokenizer"):
      continue
    for name in os.listdir(os.path.join(cache_dir, kind)):
      path = os.path.join(cache_dir, kind, name)
      stem = os.path.join(cache_dir, kind, name.split(".", 1)[0])
      if name.endswith(".parts"):
        found.append(path)
      elif name.endswith(".entry.json"):
        if cache.load_json(f"{kind}/{name.split('.', 1)[0]}") is None:
          found.append(path)
      elif name.endswith(".npy"):
        if not os.path.exists(stem + integrity.CHECK_SUFFIX) or (
            integrity.verify(path) is not None):
          found.append(path)
      elif name.endswith(".json"):  # A check record or a description.
        if not os.path.exists(stem + ".npy"):
          found.append(path)
  return found


def test_two_concurrent_runs_on_one_empty_cache(tmp_path, run_config):
  """10 of 10 trials: both runs succeed with the reference's labels."""
  records, stderr = _stress(tmp_path, run_config, mode="concurrent",
                            trials=10)
  reference = _results(tmp_path / "reference")
  assert len(records) == 20
  failed = [r for r in records if r["status"] != 0]
  assert not failed, (failed, stderr[-3000:])
  for trial in range(10):
    for run in ("a", "b"):
      assert _results(tmp_path / f"trial{trial}" / run) == reference, (
          trial, run)
    cache_dir = tmp_path / f"trial{trial}" / "cache"
    assert orphans(str(cache_dir)) == [], trial
    # One tokenizer, whole.
    (tokenizer,) = os.listdir(cache_dir / "tokenizer")
    assert json.load(open(cache_dir / "tokenizer" / tokenizer / "vocab.json",
                          encoding="utf-8"))["<|endoftext|>"] == 49407


def test_kill_9_at_random_points_then_resume(tmp_path, run_config):
  """20 seeded kill -9s, each followed by a resume; the final results equal
  an uninterrupted run's and the cache holds no orphaned files."""
  records, stderr = _stress(tmp_path, run_config, mode="faults", kills=20,
                            seed=0)
  killed = [r for r in records if r["run"] == "killed"]
  assert len(killed) == 20 and all(r["status"] == -9 for r in killed), (
      records, stderr[-3000:])
  ended = [r for r in records if r["run"] == "ended"]
  assert all(r["status"] == 0 for r in ended), (ended, stderr[-3000:])
  assert records[-1]["run"] == "final" and records[-1]["status"] == 0, (
      stderr[-3000:])
  assert _results(tmp_path / "faults" / "result") == _results(
      tmp_path / "reference")
  assert orphans(str(tmp_path / "faults" / "cache")) == []
