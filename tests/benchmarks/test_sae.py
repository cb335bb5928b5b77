"""The SAE throughput benchmark runs end to end at a tiny size."""

from benchmarks import sae as sae_bench


def test_benchmark_runs_at_a_tiny_size():
  # Two host devices (the 1-device case is the same code; the full preset
  # runs 1 and 8).
  records = list(sae_bench.run(sizes=[(16, 32, 4, 64, 3)], devices=(2,)))
  assert [r["impl"] for r in records] == ["jax", "torch", "ratios"]
  jax2, torch, ratios = records
  assert jax2["devices"] == 2 and torch["threads"] >= 1
  for r in (jax2, torch):
    assert r["rows"] == 3 * 64, r
    assert r["rows_per_s"] > 0 and r["final_mse"] > 0, r
  assert ratios["jax_2_over_torch"] > 0
