"""The accelerator suite: the tiny preset runs on a CPU and writes its
records; the floors, targets and table are computed from them."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from benchmarks import _accelerator_phases as phases
from benchmarks import _accelerator_table as table_lib
from benchmarks import accelerator as suite

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
HAS_TORCH = all(importlib.util.find_spec(m) for m in ("torch", "torchvision"))


def test_full_preset_is_the_paper_setting():
  full = suite.PRESETS["full"]
  assert full["num_images"] == 50000 and full["num_concepts"] == 20000
  assert full["target_model"] == "resnet50" and full["clip"] == "vit-b16"
  assert set(suite.PAPER_LAYERS) <= set(full["layers"])
  assert full["dtypes"] == ("bfloat16", "float32")
  assert tuple(full["kernel_shape"]) == (50000, 20000, 2048)
  assert full["num_permutations"] == 100 and full["isolate"]
  # The run must stop starting phases well inside 8 minutes.
  assert full["budget_s"] <= 420
  assert set(full) == set(suite.PRESETS["tiny"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """The records of the tiny preset, written by scripts/benchmark.py."""
  out = tmp_path_factory.mktemp("accel") / "accelerator.jsonl"
  env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
  env.pop("XLA_FLAGS", None)  # One CPU device, as a plain run has.
  done = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "benchmark.py"),
       "--suite=accelerator", "--preset=tiny", f"--output={out}"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return [json.loads(line) for line in out.read_text().splitlines()]


def test_tiny_preset_writes_every_record(tiny_run):
  by = {}
  for r in tiny_run:
    assert r["suite"] == "accelerator" and r["preset"] == "tiny"
    assert "error" not in r, r
    by.setdefault(r["measure"], []).append(r)
  expected = {"environment", "jpegs", "machine", "decode", "describe",
              "floors", "labels", "kernels", "pvalues", "linear", "sae",
              "targets"}
  assert expected <= set(by)
  assert "skipped" not in by

  jpegs = by["jpegs"][0]
  tiny = suite.PRESETS["tiny"]
  assert jpegs["images"] == tiny["num_images"] and jpegs["seconds"] > 0
  low, high = tiny["short_side"]
  assert low * low <= jpegs["mean_pixels"] <= high * high

  mach = by["machine"][0]
  assert set(mach["matmul_flops_per_s"]) == {"bfloat16", "float32"}
  assert mach["copy_bytes_per_s"] > 0
  # XLA's count for one image: a CIFAR ResNet-18 at 32 px is ~1 GFLOP.
  assert 1e8 < mach["flops_per_image"]["target"] < 5e9
  assert mach["flops_per_image"]["clip_image"] > 0
  assert mach["flops_per_text"] > 0
  decode = by["decode"][0]
  assert decode["images"] == tiny["num_images"]
  assert decode["rates"]["target"] > 0 and decode["rates"]["clip"] > 0

  describes = {r["dtype"]: r for r in by["describe"]}
  assert set(describes) == {"bfloat16", "float32"}
  for r in describes.values():
    assert r["num_images"] == tiny["num_images"]
    assert r["num_concepts"] == tiny["num_concepts"]
    assert r["neurons"] == {"conv1": 64, "layer4": 512, "fc": 100}
    assert r["describe_s"] > 0
    for stage in ("activations", "clip_images"):
      assert r["stages"][stage]["images"] == tiny["num_images"]
      assert r["stages"][stage]["images_per_s"] > 0
      assert r["stages"][stage]["input_wait_s"] >= 0
    assert {f"similarity_{l}" for l in tiny["layers"]} <= set(r["stages"])
  floors = {r["dtype"]: r["stages"] for r in by["floors"]}
  for stages in floors.values():
    assert stages["activations"]["binds"] in ("decode", "compute")
    assert stages["clip_text"]["binds"] == "compute"
    assert stages["similarity_layer4"]["binds"] == "memory"
    assert stages["probe_scan"]["floor_s"] is None
    for s in stages.values():
      if s["floor_s"]:
        assert s["ratio"] == pytest.approx(s["seconds"] / s["floor_s"])

  labels = by["labels"][0]
  assert labels["reference"] == "float32" and labels["dtype"] == "bfloat16"
  assert labels["neurons"] == 64 + 512 + 100
  assert 0 <= labels["labels_changed"] <= 1
  assert set(labels["layers"]) == set(tiny["layers"])

  kernels = by["kernels"][0]["kernels"]
  assert [k["fn"] for k in kernels] == [
      n.partition(":")[0] for n in tiny["kernels"]]
  assert all(k["seconds"] > 0 and k["first_s"] > 0 for k in kernels)
  assert [k["K"] for k in kernels] == [32, 8]  # "cos_similarity:8"
  pv = by["pvalues"][0]
  assert pv["K"] == 512 and pv["num_permutations"] == 10
  assert 0 <= pv["share_p_le_0.05"] <= 1
  lin = by["linear"][0]
  assert lin["K"] == tiny["linear_neurons"] and lin["seconds"] > 0
  sae = by["sae"][0]
  assert sae["steps"] == tiny["sae_steps"] and sae["rows_per_s"] > 0
  assert 0 <= sae["fit"]["dead_fraction"] <= 1

  if HAS_TORCH:
    torch_runs = {r["dtype"]: r for r in by["torch"]}
    assert set(torch_runs) == {"bfloat16", "float32"}
    for r in torch_runs.values():
      st = r["stages"]
      assert st["activations"]["images"] == tiny["torch_images"]
      assert st["clip_images"]["images_per_s"] > 0
      assert st["clip_text"]["texts"] == tiny["num_concepts"]
  target = by["targets"][0]["targets"]
  assert target["bfloat16_end_to_end_s"] == describes["bfloat16"][
      "describe_s"]
  assert target["labels_changed_vs_float32"] == labels["labels_changed"]
  assert target["suite_s"] > 0

  text = table_lib.table(tiny_run)
  assert "| activations |" in text and "describe_neurons end to end" in text
  assert "kernel soft_wpmi" in text and "Targets:" in text


def test_floors_name_the_binding_stage():
  mach = {"matmul_flops_per_s": {"bfloat16": 1e15, "float32": 2.5e14},
          "copy_bytes_per_s": 3e12,
          "flops_per_image": {"target": 8e9, "clip_image": 3.5e10},
          "flops_per_text": 2e9}
  run = {"dtype": "bfloat16", "num_images": 50000, "num_concepts": 20000,
         "neurons": {"layer4": 2048}, "top_k": 100,
         "stages": {"activations": {"seconds": 40.0},
                    "clip_images": {"seconds": 10.0},
                    "clip_text": {"seconds": 0.06},
                    "similarity_layer4": {"seconds": 1.0},
                    "clip_load": {"seconds": 3.0}}}
  out = suite.stage_floors(run, mach, {"target": 2500.0, "clip": 2000.0})
  # 50,000 images at 2500/s decode = 20 s > 50,000 x 8 GFLOP / 1 PFLOP/s.
  assert out["activations"]["binds"] == "decode"
  assert out["activations"]["floor_s"] == pytest.approx(20.0)
  assert out["activations"]["ratio"] == pytest.approx(2.0)
  assert out["clip_images"]["floor_s"] == pytest.approx(25.0)
  assert out["clip_text"]["floor_s"] == pytest.approx(0.04)
  # (N M + K top_k M) float32 values at 3 TB/s.
  assert out["similarity_layer4"]["floor_s"] == pytest.approx(
      4 * (5e4 * 2e4 + 2048 * 100 * 2e4) / 3e12)
  assert out["clip_load"]["floor_s"] is None
  # float32 runs against float32's rate: the FLOP floors grow 4x.
  out32 = suite.stage_floors({**run, "dtype": "float32"}, mach,
                             {"target": 1e6, "clip": 1e6})
  assert out32["activations"]["binds"] == "compute"
  assert out32["activations"]["floor_s"] == pytest.approx(1.6)
  goals = suite.targets({"bfloat16": {"describe_s": 61.0}},
                        {"bfloat16": out}, {"labels_changed": 0.25}, 300.0)
  assert goals["bfloat16_end_to_end_le_60s"] is False
  assert goals["bfloat16_stages_over_2x_floor"] == ["similarity_layer4"]
  assert goals["labels_changed_vs_float32"] == 0.25


def test_bad_arguments_fail_before_work():
  tiny = suite.PRESETS["tiny"]
  with pytest.raises(ValueError, match="clip='vit-h14'; allowed"):
    next(suite.run(**{**tiny, "clip": "vit-h14"}))
  with pytest.raises(ValueError, match="must include float32"):
    next(suite.run(**{**tiny, "dtypes": ("bfloat16",)}))
  with pytest.raises(ValueError, match="unknown phase.*allowed: machine"):
    next(suite.run(**{**tiny, "skip": ("describe",)}))


def test_a_failing_phase_process_is_one_line(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  # The phase's process fails (a folder under a file): one line, its cause.
  with pytest.raises(phases.PhaseError,
                     match="exited with 1: .*NotADirectoryError"):
    phases.call("write_jpegs", {"folder": str(blocker / "jpegs"),
                                "num_images": 1, "short_side": [8, 8],
                                "quality": 90, "processes": 1},
                isolate=True)
  out = phases.call("write_jpegs", {"folder": str(tmp_path / "jpegs"),
                                    "num_images": 3, "short_side": [8, 12],
                                    "quality": 90, "processes": 1},
                    isolate=True)
  assert out["images"] == 3 and out["process_s"] > 0
  assert len(list((tmp_path / "jpegs" / "000").iterdir())) == 3
