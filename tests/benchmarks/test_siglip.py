"""benchmarks.siglip runs as a suite at its tiny preset (no timing is
checked): records per tower, and with the PyTorch worker the same
weights give the same pooled embeddings."""

import pytest

from benchmarks import siglip as bench


def test_tiny_preset_without_torch_yields_records():
  assert {"b16", "b16_bf16", "tiny"} <= set(bench.PRESETS)
  records = list(bench.run(**bench.PRESETS["tiny"], compare_torch=False))
  assert [r["tower"] for r in records] == ["siglip_flax", "clip_flax"]
  for r in records:
    assert r["config"] == bench.MODELS["tiny"]
    assert r["best_s"] > 0 and r["images_per_s"] > 0 and r["first_s"] > 0
    assert "max_abs_diff_vs_torch" not in r


def test_tiny_preset_against_the_torch_worker():
  pytest.importorskip("torch", reason="torch extra not installed")
  records = {r["tower"]: r for r in bench.run(**bench.PRESETS["tiny"])}
  assert set(records) == {"siglip_flax", "clip_flax", "siglip_torch"}
  assert records["siglip_flax"]["max_abs_diff_vs_torch"] < 1e-5
  assert records["siglip_torch"]["device"] == "cpu"
  assert records["siglip_torch"]["images_per_s"] > 0


def test_unknown_model_and_dtype():
  with pytest.raises(ValueError, match="allowed"):
    next(bench.run(model="so400m"))
  with pytest.raises(ValueError, match="compute_dtype"):
    next(bench.run(model="tiny", compute_dtype="int8"))
