"""The original-pipeline benchmark runs both sides on tiny models."""

import os

import pytest

from benchmarks import original_pipeline as suite

SAMPLE = os.path.join(suite.clip_bench.shared_data_dir(), "imagenet_sample")


def test_presets():
  assert {"small", "cpu", "quick"} <= set(suite.PRESETS)
  for name in ("small", "cpu"):
    preset = suite.PRESETS[name]
    assert preset["target_model"] == "resnet50" and preset["clip_model"] == (
        "vit-b16") and preset["repeats"] >= 3 and preset["num_workers"] >= 1
    assert preset["layers"] == suite.LAYERS


@pytest.mark.skipif(not os.path.isdir(SAMPLE), reason=f"no {SAMPLE}")
def test_quick_run_records():
  pytest.importorskip("torchvision", reason="torch extra not installed")
  records = list(suite.run(**{**suite.PRESETS["quick"], "num_images": 6,
                              "num_concepts": 12}))
  assert [r["framework"] for r in records] == ["jax", "original_torch",
                                               "ratio"]
  for r in records[:2]:
    assert len(r["stages_s"]["end_to_end"]) == 1
    for stage in ("activations", "clip_images", "clip_text", "end_to_end"):
      assert r["per_s"][stage]["best"] > 0
  ratio = records[2]
  assert set(ratio["jax_over_torch"]) == {"activations", "clip_images",
                                          "clip_text", "end_to_end"}
  # Same weights, photos and concepts: the labels are mostly the same
  # (random tiny models have near-ties).
  assert set(ratio["labels_equal"]) == {"layer3", "layer4"}
  assert min(ratio["labels_equal"].values()) > 0.8
  assert all(len(r["load_avg"]) == 3 for r in records)


def test_unknown_clip_model():
  with pytest.raises(ValueError, match="allowed"):
    next(suite.run(**{**suite.PRESETS["quick"], "clip_model": "vit-h14"}))


def test_compilation_cache_is_scoped(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  before = jax.config.jax_compilation_cache_dir
  cache = tmp_path / "cache"
  with suite._compilation_cache(str(cache)):  # pylint: disable=protected-access
    jax.jit(lambda x: x * 3.0 + 1.0)(jnp.arange(5.0)).block_until_ready()
  written = set(cache.iterdir())
  assert written  # The timed passes can load what the warm-up compiled.
  assert jax.config.jax_compilation_cache_dir == before
  # After the block nothing more is written there (the suite deletes it),
  # even for compilations the default threshold (1 s) would not skip.
  name = "jax_persistent_cache_min_compile_time_secs"
  threshold = getattr(jax.config, name)
  jax.config.update(name, 0.0)
  try:
    jax.jit(lambda x: x * 5.0 - 2.0)(jnp.arange(7.0)).block_until_ready()
  finally:
    jax.config.update(name, threshold)
  assert set(cache.iterdir()) == written
