"""benchmarks.siglip runs at a tiny size (no timing is checked)."""

from benchmarks import siglip as bench


def test_bench_runs_tiny_without_torch():
  result = bench.run(batch_size=2, repeats=1, overrides=bench.TINY,
                     with_torch=False)
  assert result["config"] == bench.TINY
  for name in ("siglip_flax", "clip_flax"):
    assert result[name]["median_s"] > 0 and result[name]["images_per_s"] > 0
  assert "siglip_torch" not in result and "max_abs_diff" not in result
