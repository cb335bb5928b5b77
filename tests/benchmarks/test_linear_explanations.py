"""The linear explanations benchmark suite runs at a tiny size."""

from benchmarks import linear_explanations as suite


def test_suite_runs_tiny():
  assert {"full", "quick"} <= set(suite.PRESETS)
  assert suite.PRESETS["full"]["sizes"] == [(10000, 2048, 20000)]
  records = list(suite.run(sizes=[(300, 6, 40)], loop_neurons=2))
  assert len(records) == 1
  rec = records[0]
  assert (rec["N"], rec["K"], rec["M"]) == (300, 6, 40)
  assert rec["wall_s"] > 0 and rec["loop_s_per_neuron"] > 0
  assert abs(rec["loop_s_scaled"] - rec["loop_s_per_neuron"] * 6) < 0.1
  assert rec["recall"] > 0.5 and rec["peak_rss_mb"] > 0
  assert len(rec["loadavg_before"]) == 3
