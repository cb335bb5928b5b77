"""`reproduce`'s smoke tables: every table of the papers runs offline on
random models and is written in the paper's layout beside its numbers."""

import os
import subprocess
import sys

import pytest

from configs import shared_data
from jax_dissect.pipeline import papers
from jax_dissect.pipeline import reproduce
from tests import helpers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
  """All five smoke tables from one runner (they share runs and cache)."""
  work = tmp_path_factory.mktemp("repro")
  setting = reproduce.Setting(
      work_dir=str(work), concepts_dir=shared_data.path("concepts"),
      smoke=True, smoke_photos=shared_data.path("imagenet_sample"),
      smoke_concepts=10, clip_tokenizer=shared_data.path(
          "clip_bpe", "bpe_simple_vocab_16e6.txt.gz"))
  runner = reproduce.Runner(setting)
  out = {}
  for name in reproduce.TABLES:
    result = reproduce.reproduce_table(name, setting, runner)
    out[name] = (result, reproduce.write_table(result, str(work / "tables")))
  return out


def test_table1(tables):
  result, paths = tables["table1"]
  assert len(result.rows) == len(papers.TABLE1)
  for row, (probe, concepts, clip_cos, mpnet) in zip(result.rows,
                                                     papers.TABLE1):
    assert row["d_probe"] == papers.PROBE_NAMES[probe]
    assert row["cos_clip_paper"] == clip_cos
    assert row["cos_sentence_paper"] == mpnet
    assert -1 <= row["cos_clip"] <= 1 and row["cos_sentence"] is None
  md = open(paths["table1.md"]).read()
  assert "| CLIP-Dissect | ImageNet val | 20k |" in md and "(0.7900)" in md
  assert "Network Dissection (baseline)" in md
  assert "no sentence model" in md


def test_table2(tables):
  result, _ = tables["table2"]
  (row,) = result.rows
  broden = {l.strip().lower() for l in open(shared_data.path(
      "concepts", "broden_labels_clean.txt"))}
  places = [reproduce.places_name(l) for l in open(shared_data.path(
      "concepts", "categories_places365.txt"))][:reproduce.SMOKE_CLASSES]
  assert row["n_classes_in_concepts"] == sum(p in broden for p in places)
  assert row["top1_paper"] == 58.05 and 0 <= row["top1"] <= 100
  assert "(267 of 365)" in result.markdown


def test_table3(tables):
  result, _ = tables["table3"]
  assert [(r["metric"], r["similarity_fn"]) for r in result.rows] == [
      (m, f) for m in ("cos_sentence", "cos_clip", "top1")
      for f in papers.TABLE3_FNS]
  top1 = {r["similarity_fn"]: r for r in result.rows if r["metric"] == "top1"}
  assert top1["soft_wpmi"]["imagenet_val_paper"] == 95.00
  assert top1["soft_wpmi"]["average_paper"] == 76.78
  for r in top1.values():
    values = [r[p] for p in papers.TABLE3_PROBES]
    assert r["average"] == pytest.approx(sum(values) / 4)
  assert result.markdown.count("\n") == 2 + 9


def test_stability_table_and_chart(tables):
  result, paths = tables["stability"]
  assert [r["config"] for r in result.rows] == [
      "ImageNet with SoftWPMI", "ImageNet with WPMI", "10k with SoftWPMI",
      "10k with WPMI"]
  for r in result.rows:
    assert r["n_neurons"] == 64 + 128 + 256 + 512  # layer1..4, pooled.
    assert 0 <= r["stability_5_16"] <= 100
  assert result.rows[0]["stability_5_10_paper"] == "99.947917 / 99.973958"
  with open(paths["stability.png"], "rb") as f:
    assert f.read(8) == PNG_MAGIC


def test_profile_figures(tables):
  result, paths = tables["profile"]
  assert [(r["model"], r["tau"], r["interpretable_paper"])
          for r in result.rows] == [
              (papers.PROFILE_MODELS[m][0], t, p)
              for m, t, p in papers.PROFILE_INTERPRETABLE]
  for model in papers.PROFILE_MODELS:
    assert f"profile_{model}.png" in paths
  layers = {r["layer"] for r in result.extra["profile_layers"]}
  assert {"layer4", "vit.encoder.layer.1"} <= layers


def test_unknown_table_lists_the_tables():
  with pytest.raises(ValueError, match="unknown table 'table9'; tables: "
                     "table1, table2, table3, stability, profile"):
    reproduce.check_table("table9")
  env = dict(os.environ)
  env.pop("XLA_FLAGS", None)
  proc = subprocess.run([sys.executable, "-m", "jax_dissect", "reproduce",
                         "--table=table9"], cwd=helpers.REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2  # Bad usage.
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: unknown table 'table9'; tables: table1, table2, table3, "
      "stability, profile")
