"""The scoring benchmark suite runs at a tiny size and reports its stages."""

from benchmarks import scoring as suite


def test_suite_runs_tiny():
  assert {"full", "quick"} <= set(suite.PRESETS)
  records = list(suite.run(sizes=[(200, 8, 20)], kernels=["soft_wpmi"],
                           num_permutations=5, reps=1, exact_kernels=[],
                           exact_num_permutations=2, exact_reps=1))
  assert len(records) == 1
  rec = records[0]
  assert rec["kernel"] == "soft_wpmi" and rec["pooled"]
  assert rec["label_s"] > 0 and rec["pvalues_s"] > 0
  assert rec["ratio"] == rec["pvalues_s"] / rec["label_s"]
  assert set(rec["stages"]) >= {"observed_scores", "pool_likelihoods",
                                "null_scores"}
  assert len(rec["loadavg_before"]) == 3
