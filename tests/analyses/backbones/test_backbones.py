"""The backbones analysis: a run's layers labelled with other backbones.

On arrays (a synthetic run, planted answers): re-running the kernel on the
run's P gives the run's labels; a backbone whose concept columns are
permuted (every concept means another) disagrees on every planted label
and gets no class name right, yet simulates as well (each backbone is
scored with its own P); a noisier backbone simulates worse.

End to end (tiny random models, 40 of the shared photos, no download): a
describe_neurons run with a random CLIP, then the analysis with (a) a
directory holding that same CLIP (must agree on every label and give the
same correlations as the run's own row) and (b) a tiny random SigLIP
directory; P of each is cached with describe_neurons' keys, so a
describe_neurons run with the SigLIP directory finds the analysis' P and
gives the labels the analysis reported.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from jax_dissect import analyses
from jax_dissect import clip
from jax_dissect import pipeline
from jax_dissect import report
from jax_dissect.analyses import backbones
from jax_dissect.analyses.backbones import compare
from jax_dissect.analyses.evaluate import metrics as evaluate_lib
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.store import results as results_lib
from tests import helpers
from tests.helpers import pipeline_config
from tests.helpers import siglip as siglip_testing
from tests.helpers import synthetic_run as synth

# -- on arrays ----------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
  world = synth.make_world(n_per_class=12)
  path = synth.write_results(str(tmp_path_factory.mktemp("synth") / "r"),
                             world)
  return results_lib.load_run(path)


def test_backbones_on_planted_arrays(synthetic):
  run = synthetic
  p = np.asarray(run.concept_activations())
  presence = scoring.run_presence_params(run)
  settings = compare.Settings(class_layer="fc",
                              class_names=tuple(synth.CLASSES))
  perm = np.random.default_rng(0).permutation(p.shape[1])
  while np.any(perm == np.arange(p.shape[1])):
    perm = np.random.default_rng(int(perm[0])).permutation(p.shape[1])
  noisy = p + np.random.default_rng(1).normal(0, 0.15, p.shape).astype(
      np.float32)
  rows = {}
  for name, q in (("own", p), ("permuted", p[:, perm]), ("noisy", noisy)):
    for layer in ("layer4", "fc"):
      a = run.activations(layer)
      own = compare.run_labels(run, layer, a.shape[1])
      labels = compare.label_layer(run, a, q)
      if name == "own":  # The run's kernel on its P gives its labels.
        np.testing.assert_array_equal(labels, own)
      rows[name, layer] = compare.layer_row(run, layer, a, q, labels, own,
                                            presence, settings)
  assert rows["own", "fc"]["agreement"] == 1.0
  assert rows["own", "fc"]["top1"] == 1.0  # fc unit k fires on class k.
  assert "top1" not in rows["own", "layer4"]
  # Permuted concepts: every label another concept, no class name right...
  assert rows["permuted", "fc"]["agreement"] == 0.0
  assert rows["permuted", "fc"]["top1"] == 0.0
  # ... yet each backbone simulates with its own P: as well as the run's.
  for layer in ("layer4", "fc"):
    assert rows["permuted", layer]["mean_correlation"] == pytest.approx(
        rows["own", layer]["mean_correlation"], abs=1e-5)
  # A noisier backbone simulates the planted class neurons worse.
  assert rows["noisy", "fc"]["mean_correlation"] < (
      rows["own", "fc"]["mean_correlation"] - 0.05)
  # The own row's correlation is the scoring analysis' mean correlation.
  scored = analyses.run("scoring", run, num_permutations=2)
  fc = [s for s in scored.tables["explanation_scores_summary"].rows
        if s["layer"] == "fc"][0]
  assert rows["own", "fc"]["mean_correlation"] == pytest.approx(
      fc["mean_correlation"], abs=1e-5)
  # top1 is labels equal to class names, case and spaces ignored.
  assert compare.top1(["Tabby  Cat", "dog"], ["tabby cat", "pizza"]) == 0.5


def test_linear_explanations_column(synthetic):
  run = synthetic
  a = run.activations("fc")
  own = compare.run_labels(run, "fc", a.shape[1])
  row = compare.layer_row(
      run, "fc", a, run.concept_activations(), own, own,
      scoring.run_presence_params(run),
      compare.Settings(linear_explanations=True, max_length=2))
  # At least as good as the single labels (the greedy search starts there).
  assert row["mean_linear_correlation"] >= row["mean_correlation"] - 0.02


# -- end to end ---------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  """A tiny describe_neurons run (random CLIP), a directory of that CLIP,
  a tiny random SigLIP directory, a concept set holding the 100 class
  names of the target's fc (resnet18_cifar100) and those names."""
  root = tmp_path_factory.mktemp("backbones")
  probe = root / "probe"
  probe.mkdir()
  for name in sorted(os.listdir(pipeline_config.SAMPLE))[:40]:
    shutil.copy(os.path.join(pipeline_config.SAMPLE, name), probe / name)
  names = evaluate_lib.read_class_names(pipeline_config.IMAGENET_LABELS,
                                        first_synonym=True)[:100]
  (root / "classes.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
  extra = ["red", "blue", "grass", "sky", "wooden", "metal", "water"]
  (root / "concepts.txt").write_text("\n".join(names + extra) + "\n",
                                     encoding="utf-8")
  config = pipeline_config.config(
      root, d_probe=f"folder:{probe}", concept_set=str(root / "concepts.txt"),
      target_layers="layer4,fc", shard_images=16)
  run = pipeline.describe_neurons(config)
  clip.load_run_embedder(run.config).save_pretrained(root / "clip_copy")
  tok = siglip_testing.write_tokenizer(root / "siglip_tok")
  siglip_dir = siglip_testing.write_tiny_siglip(root / "siglip", tok, seed=3)
  return {"root": root, "run": run, "config": config,
          "clip_copy": str(root / "clip_copy"), "siglip": siglip_dir,
          "classes": str(root / "classes.txt")}


def _rows(output):
  return {(r["backbone"], r["layer"]): r
          for r in output.tables[backbones.TABLE].rows}


def test_end_to_end(world, log_lines):
  run = world["run"]
  output = analyses.run("backbones", run, backbones=(
      world["clip_copy"], world["siglip"]), class_names=world["classes"])
  rows = _rows(output)
  # Per layer, the run's own backbone first, then the others in order.
  assert [(r["layer"], r["backbone"]) for r in
          output.tables[backbones.TABLE].rows] == [
              (layer, name) for layer in ("layer4", "fc") for name in (
                  "random", world["clip_copy"], world["siglip"])]
  for layer in ("layer4", "fc"):
    own, copy = rows["random", layer], rows[world["clip_copy"], layer]
    sig = rows[world["siglip"], layer]
    assert own["agreement"] == 1.0
    # The same CLIP from a directory: the same P, labels and scores.
    assert copy["agreement"] == 1.0 and copy["model_type"] == "clip"
    assert copy["mean_correlation"] == pytest.approx(
        own["mean_correlation"], abs=1e-6)
    assert copy["presence_a"] == pytest.approx(own["presence_a"])
    assert own["presence_source"] == copy["presence_source"] == "fitted"
    # Another backbone labels differently, with its own fitted presence.
    assert sig["model_type"] == "siglip" and sig["agreement"] < 0.9
    assert sig["presence_source"] == "fitted"
    assert sig["presence_a"] != own["presence_a"]
  # top-1 on the class layer only: the run's, recomputed by hand.
  fc_labels = [n.description for n in run.layer_neurons("fc")]
  names = evaluate_lib.read_class_names(world["classes"])
  assert rows["random", "fc"]["top1"] == pytest.approx(
      np.mean([l == c for l, c in zip(fc_labels, names)]))
  assert "top1" not in rows["random", "layer4"]

  # Each backbone's P is in the run's cache under describe_neurons' keys.
  info = {b["name"]: b for b in output.documents[backbones.INFO]["backbones"]}
  sig_p = info[world["siglip"]]["p_path"]
  assert sig_p.startswith(run.cache_dir()) and os.path.exists(sig_p)
  assert info[world["siglip"]]["model_type"] == "siglip"
  assert any(c.startswith("SigLIP image embeddings") for c in (
      l[len("computing: "):] for l in log_lines if l.startswith("computing")))
  log_lines.clear()
  again = analyses.run("backbones", run, backbones=(world["siglip"],))
  assert not [l for l in log_lines if l.startswith("computing")]
  assert _rows(again)[world["siglip"], "fc"] == {
      k: v for k, v in rows[world["siglip"], "fc"].items() if k != "top1"}

  # describe_neurons with the SigLIP directory: the analysis' P (a cache
  # hit) and the labels the analysis reported.
  config = world["config"].copy_and_resolve_references()
  config.clip_model = world["siglip"]
  config.result_dir = str(world["root"] / "siglip_run")
  log_lines.clear()
  sig_run = pipeline.describe_neurons(config)
  assert any(l.startswith("cache hit: concept activations P")
             for l in log_lines)
  assert not [l for l in log_lines if l.startswith("computing: SigLIP")]
  assert sig_run.arrays["concept_activations"] == sig_p
  assert sig_run.config["backbone"]["model_type"] == "siglip"
  presence = sig_run.config["concept_presence"]
  assert presence["source"] == "fitted"
  assert presence["a"] == pytest.approx(rows[world["siglip"], "fc"][
      "presence_a"])
  column = [c for c in output.tables[backbones.LABELS_TABLE].neuron_columns
            if "siglip" in c][0]
  by_unit = {(r["layer"], r["unit"]): r[column]
             for r in output.tables[backbones.LABELS_TABLE].rows}
  for n in sig_run.neurons:
    assert n.description == by_unit[n.layer, n.unit]

  # Written with a manifest, the report shows the table, chart and labels.
  results_lib.write_analysis(output, run.analysis_dir())
  data = report.collect_report_data(run, num_thumbs=0)
  assert any(t["title"].startswith("Backbones compared") for t in
             data["tables"])
  assert any(c["title"].startswith("Per layer and backbone") for c in
             data["charts"])
  assert column in {c["title"] for c in data["views"][0]["columns"]}


def test_bad_options_are_one_line(world, tmp_path):
  run = world["run"]

  def error(**overrides):
    with pytest.raises((ValueError, OSError)) as err:
      analyses.run("backbones", run, **overrides)
    message = str(err.value)
    assert "\n" not in message and len(message) <= 300, message
    return message

  assert "backbones is empty" in error()
  assert "random" in error(backbones=("random",))
  assert "does not exist" in error(backbones=(str(tmp_path / "nope"),))
  vit = shutil.copytree(world["siglip"], tmp_path / "vit")
  text = (vit / "config.json").read_text().replace('"siglip"', '"vit"')
  (vit / "config.json").write_text(text)
  assert "clip, siglip, siglip2" in error(backbones=(str(vit),))
  no_tok = shutil.copytree(world["siglip"], tmp_path / "no_tok")
  os.remove(no_tok / "spiece.model")
  assert "spiece.model" in error(backbones=(str(no_tok),))
  short = tmp_path / "short.txt"
  short.write_text("tench\ngoldfish\n", encoding="utf-8")
  assert "2 names but layer 'fc' has 100" in error(
      backbones=(world["siglip"],), class_names=str(short))
  other = tmp_path / "other.txt"
  other.write_text("\n".join(f"thing {i}" for i in range(100)) + "\n",
                   encoding="utf-8")
  assert "not in the run's concept set" in error(
      backbones=(world["siglip"],), class_names=str(other))


def test_command_line(world, tmp_path):
  """scripts/analyze.py --analysis=backbones: the summary lines, files and
  manifest; a bad backbone is one `error:` line."""
  script = os.path.join(helpers.REPO, "scripts", "analyze.py")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out_dir = tmp_path / "analysis"
  proc = subprocess.run(
      [sys.executable, script, "--analysis=backbones",
       f"--results_dir={world['run'].path}", f"--out_dir={out_dir}",
       f"--backbones={world['siglip']}", "--layers=fc"],
      cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert lines[0].startswith("random fc: agreement 1.000, mean correlation")
  assert lines[1].startswith(f"{world['siglip']} fc: agreement")
  for name in ("backbones.csv", "backbones.json", "backbones.png",
               "backbone_labels.csv", "backbones_info.json",
               "backbones.outputs.json"):
    assert (out_dir / name).exists(), name
  vit = shutil.copytree(world["siglip"], tmp_path / "vit")
  text = (vit / "config.json").read_text().replace('"siglip"', '"vit"')
  (vit / "config.json").write_text(text)
  proc = subprocess.run(
      [sys.executable, script, "--analysis=backbones",
       f"--results_dir={world['run'].path}", f"--backbones={vit}"],
      cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("error: unsupported architecture model_type='vit'")
  assert "clip, siglip, siglip2" in last
