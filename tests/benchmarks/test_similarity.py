"""The similarity suite's comparison with the original program (tiny sizes)."""

import pytest

from benchmarks import similarity as suite


def test_presets_cover_the_issue_sizes():
  cases = suite.PRESETS["original"]["original_cases"]
  for kernel in ("soft_wpmi", "wpmi"):
    for n, k, m in ((5000, 256, 20000), (10000, 512, 20000)):
      assert {"kernel": kernel, "N": n, "K": k, "M": m} in cases
  assert {c["kernel"] for c in cases} == set(suite._ORIGINAL_KERNELS)  # pylint: disable=protected-access
  assert suite.PRESETS["original"]["reps"] >= 3
  targets = suite.PRESETS["original_targets"]["original_cases"]
  assert sorted(map(str, targets)) == sorted(
      str(c) for c in cases if c["kernel"] in ("soft_wpmi", "wpmi"))


def test_original_comparison_records():
  pytest.importorskip("torch", reason="torch extra not installed")
  cases = [{"kernel": "soft_wpmi", "N": 120, "K": 6, "M": 40},
           {"kernel": "rank_reorder", "N": 120, "K": 6, "M": 40,
            "torch_neurons": 4}]
  records = list(suite.run(original_cases=cases, reps=2,
                           float64_labels=True))
  impls = [(r["kernel"], r["impl"]) for r in records]
  assert impls == [
      ("soft_wpmi", "jax"), ("soft_wpmi", "jax_device"),
      ("soft_wpmi", "original_torch"),
      ("soft_wpmi", "original_torch_stages"), ("soft_wpmi", "jax_stages"),
      ("soft_wpmi", "ratio_vs_original"),
      ("rank_reorder", "jax"), ("rank_reorder", "jax_device"),
      ("rank_reorder", "original_torch"),
      ("rank_reorder", "ratio_vs_original")]
  for r in records:
    assert len(r["load_avg"]) == 3
  by = {(r["kernel"], r["impl"]): r for r in records}
  timed = by["soft_wpmi", "jax"]
  assert len(timed["passes_s"]) == 2 and timed["best_s"] <= timed["median_s"]
  assert len(timed["load_avg_1min_per_pass"]) == 2
  ratio = by["soft_wpmi", "ratio_vs_original"]
  assert ratio["speedup_best"] > 0 and ratio["speedup_median"] > 0
  assert ratio["speedup_best_device"] > 0
  # Equal programs: same labels, S to float32 precision.
  assert ratio["labels_equal"] == 1.0
  assert ratio["max_abs_diff"] < 1e-3
  assert ratio["jax_labels_equal_float64"] == 1.0
  assert set(by["soft_wpmi", "original_torch_stages"]["stages_s"]) == {
      "softmax", "top_k", "neuron_loop", "prior"}
  assert len(by["soft_wpmi", "jax_stages"]["stages_s"]) == 4
  rr = by["rank_reorder", "ratio_vs_original"]
  assert rr["torch_neurons"] == 4 and rr["labels_equal"] == 1.0
  assert by["rank_reorder", "original_torch"]["neurons"] == 4


def test_bad_cases():
  with pytest.raises(ValueError, match="allowed"):
    next(suite.run(original_cases=[{"kernel": "nope", "N": 9, "K": 2,
                                    "M": 3}]))
  with pytest.raises(ValueError, match="prior"):
    next(suite.run(original_cases=[{"kernel": "wpmi", "N": 9, "K": 2,
                                    "M": 3, "torch_neurons": 1}]))


def test_matmul_comparison_alternates_in_one_process():
  cases = [{"kernel": "cos_similarity_cubed", "N": 60, "K": 5, "M": 30}]
  (record,) = suite.run(matmul_cases=cases, reps=3)
  assert record["impl"] == "vs_matmul" and record["N"] == 60
  for side in ("jax", "matmul"):
    assert len(record[side]["passes_s"]) == 3
    assert 0 < record[side]["best_s"] <= record[side]["median_s"]
  assert record["time_over_matmul_best"] == (
      record["jax"]["best_s"] / record["matmul"]["best_s"])
  assert len(record["load_avg"]) == 3
  sizes = {(c["N"], c["K"], c["M"])
           for c in suite.PRESETS["cos_floor"]["matmul_cases"]}
  assert (10000, 2048, 20000) in sizes
  with pytest.raises(ValueError, match="allowed"):
    next(suite.run(matmul_cases=[{"kernel": "nope", "N": 9, "K": 2,
                                  "M": 3}]))
