"""The matmul_floor suite times every library on a tiny product."""

from benchmarks import matmul_floor as suite


def test_quick_preset_yields_a_rate_per_library():
  records = list(suite.run(**suite.PRESETS["quick"]))
  assert len(records) == 1
  rates = records[0]["gflop_per_s"]
  assert {"xla_default", "xla_forward_options", "numpy"} <= set(rates)
  assert all(r > 0 for r in rates.values())
