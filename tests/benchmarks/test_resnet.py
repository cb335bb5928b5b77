"""The resnet benchmark suite runs and its two frameworks agree (tiny size)."""

import pytest

from benchmarks import resnet as suite


def test_suite_runs_tiny():
  pytest.importorskip("torchvision", reason="torch extra not installed")
  assert {"full", "quick"} <= set(suite.PRESETS)
  records = list(suite.run(num_images=2, batch_size=2, image_size=32,
                           repeats=1))
  assert [r["framework"] for r in records] == [
      "jax", "torch", "jax_xla_default", "ratio"]
  assert all(r["images_per_s"] > 0 for r in records[:3])
  assert records[0]["compiler_options"] == {
      "xla_cpu_experimental_ynn_fusion_type": ""}
  assert records[3]["max_rel_diff_pooled"] < 1e-4
  assert records[3]["xla_default_over_torch"] > 0


def test_suite_runs_tiny_in_bfloat16():
  """Preset bf16: jax_dissect in bfloat16 against torch.autocast; both
  stay within bfloat16's error of jax_dissect's float32 outputs."""
  pytest.importorskip("torchvision", reason="torch extra not installed")
  assert suite.PRESETS["bf16"]["dtype"] == "bfloat16"
  records = list(suite.run(num_images=2, batch_size=2, image_size=32,
                           repeats=1, dtype="bfloat16"))
  assert [r["framework"] for r in records] == [
      "jax", "torch", "jax_xla_default", "ratio"]
  assert all(r["dtype"] == "bfloat16" for r in records)
  for r in records[:3]:
    assert 0 < r["max_rel_diff_vs_jax_float32"] < 0.1, r
  assert records[3]["max_rel_diff_pooled"] < 0.1
