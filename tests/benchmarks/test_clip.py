"""Smoke test of the CLIP benchmark suite (JAX side only, tiny model)."""

import os

import pytest

from benchmarks import clip as clip_bench

BPE = os.path.join(clip_bench.shared_data_dir(), "clip_bpe",
                   "bpe_simple_vocab_16e6.txt.gz")


@pytest.mark.skipif(not os.path.isfile(BPE), reason=f"no {BPE}")
def test_quick_preset_without_torch_yields_records():
  assert {"full", "quick"} <= set(clip_bench.PRESETS)
  kwargs = {**clip_bench.PRESETS["quick"], "compare_torch": False,
            "p_shape": (60, 40, 8)}
  records = list(clip_bench.run(**kwargs))
  whats = [r["what"] for r in records]
  assert whats[:3] == ["images (preprocessed pixels)",
                       "texts (tokenize + encode)",
                       "images (JPEG files: decode + preprocess + encode)"]
  assert all(r["jax_per_s"] > 0 for r in records[:3])
  storage = {r["what"]: r for r in records[3:]}
  assert set(storage) == {"P stored as float16", "P stored as bfloat16"}
  assert storage["P stored as float16"]["max_abs_error"] < 1e-3
  for r in storage.values():
    assert 0 <= r["soft_wpmi_label_changed_1_concept"] <= 1
    assert 0 <= r["soft_wpmi_label_changed_2_concepts"] <= 1


def test_unknown_model():
  with pytest.raises(ValueError, match="allowed"):
    next(clip_bench.run(model="vit-h14"))


@pytest.mark.skipif(not os.path.isfile(BPE), reason=f"no {BPE}")
def test_tiny_run_against_the_torch_worker():
  pytest.importorskip("torch", reason="torch extra not installed")
  records = list(clip_bench.run(model="tiny", num_images=2, num_texts=4,
                                image_batch=2, text_batch=2, repeats=1))
  for r in records[:2]:  # Images and texts: same weights, same embeddings.
    assert r["max_abs_diff_vs_torch"] < 1e-5
    assert r["torch_per_s"] > 0


def test_shared_data_follows_the_environment_variable(monkeypatch, tmp_path):
  monkeypatch.setenv("JAX_DISSECT_SHARED_DATA", str(tmp_path))
  assert clip_bench.shared_data_dir() == str(tmp_path)
