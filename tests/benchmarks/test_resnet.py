"""The resnet benchmark suite runs and its two frameworks agree (tiny size)."""

import pytest

from benchmarks import resnet as suite


def test_suite_runs_tiny():
  pytest.importorskip("torchvision", reason="torch extra not installed")
  assert {"full", "quick"} <= set(suite.PRESETS)
  records = list(suite.run(num_images=2, batch_size=2, image_size=32,
                           repeats=1))
  assert [r["framework"] for r in records] == ["jax", "torch", "ratio"]
  assert all(r["images_per_s"] > 0 for r in records[:2])
  assert records[2]["max_rel_diff_pooled"] < 1e-4
