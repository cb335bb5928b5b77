"""The analysis scripts run end to end on a synthetic results directory."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests import helpers
from tests.helpers import synthetic_run as synth

REPO = helpers.REPO
FAKE_EMBED = "tests.helpers.synthetic_run:fake_embed"


@pytest.fixture(scope="module")
def res(tmp_path_factory):
  root = tmp_path_factory.mktemp("scripts")
  world = synth.make_world(n_per_class=6)
  path = synth.write_results(str(root / "res"), world)
  synth.write_images(str(root / "images"), world)
  return {"path": path, "root": root}


def _run(script, *flags):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO)
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", script), *flags],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_evaluate_script(res):
  names = res["root"] / "classes.txt"
  names.write_text("\n".join(synth.CLASSES) + "\n")
  proc = _run("evaluate.py", f"--results_dir={res['path']}", "--layer=fc",
              f"--class_names={names}", "--similarity_fns=soft_wpmi,wpmi",
              "--text_embedder=cached")
  assert "soft_wpmi" in proc.stdout and "wpmi" in proc.stdout
  with open(os.path.join(res["path"], "analysis", "evaluation.json")) as f:
    table = json.load(f)
  assert table[0]["top1"] == 1.0 and table[0]["cos_clip"] == pytest.approx(1)


def test_profile_stability_report_scripts(res):
  table = res["root"] / "cats.tsv"
  table.write_text("".join(f"{c}\tobject\n" for c in synth.CLASSES))
  _run("profile_layers.py", f"--results_dir={res['path']}",
       "--categorizer=table", f"--category_table={table}")
  _run("profile_layers.py", f"--results_dir={res['path']}",
       f"--text_embed_fn={FAKE_EMBED}", f"--out_dir={res['root'] / 'clip'}")
  _run("stability.py", f"--results_dir={res['path']}", "--num_resamples=3",
       "--top_ks=5,10", "--layers=layer4")
  out = res["root"] / "report.html"
  proc = _run("make_report.py", f"--results_dir={res['path']}",
              f"--image_root={res['root'] / 'images'}", f"--out={out}",
              "--num_thumbs=2")
  assert proc.stdout.strip() == str(out)
  page = out.read_text()
  # Charts are embedded (their file names appear only as text).
  data = json.loads(page.split('id="report-data">')[1].split("</script>")[0]
                    .replace("<\\/", "</"))
  charts = {c["file"]: c["src"] for c in data["charts"]}
  assert charts and all(v.startswith("data:image/png;base64,")
                        for v in charts.values())
  assert 'src="profile.png"' not in page
  assert "Label stability per layer" in page
  assert "Compositional concepts (best pairs)" not in page  # not run yet
  for name in ("profile.png", "interpretable_vs_tau.png", "stability.csv"):
    assert os.path.exists(os.path.join(res["path"], "analysis", name))
  assert os.path.exists(res["root"] / "clip" / "profile.json")


def test_compositional_and_weight_scripts(res):
  _run("compositional.py", f"--results_dir={res['path']}", "--layer=layer4",
       "--units=0,1", "--num_singles=4", "--top_n=2",
       f"--text_embed_fn={FAKE_EMBED}")
  with open(os.path.join(res["path"], "analysis", "compositional.csv")) as f:
    assert len(f.read().splitlines()) == 1 + 2 * 2
  w = np.random.default_rng(0).standard_normal((8, 8))  # torch layout (out, in)
  np.save(res["root"] / "w.npy", w)
  _run("weight_analysis.py", f"--results_dir={res['path']}",
       "--layer_in=layer4", "--layer_out=fc", f"--weights={res['root']}/w.npy",
       "--transpose_torch", "--top_n=10", "--text_embedder=cached")
  with open(os.path.join(res["path"], "analysis",
                         "weights_layer4_fc.json")) as f:
    summary = json.load(f)
  assert summary["n"] == 64 and -1 <= summary["r"] <= 1
  out = res["root"] / "report2.html"
  _run("make_report.py", f"--results_dir={res['path']}", f"--out={out}",
       "--num_thumbs=0")
  page = out.read_text()
  assert "Compositional concepts (best pairs)" in page
  assert "Weights vs label similarity (layer4 -&gt; fc)" in page or (
      "Weights vs label similarity (layer4 -> fc)" in page)


def test_script_bad_value_is_one_clear_line(res):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "stability.py"),
       f"--results_dir={res['path']}", "--layers=layer9", "--num_resamples=2"],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  assert proc.returncode != 0
  lines = proc.stderr.strip().splitlines()
  assert lines[-1].startswith("error: layer 'layer9' is not in the results")
  assert "Traceback" not in proc.stderr


def test_report_to_a_directory_and_damaged_array_are_one_line(res, tmp_path):
  """make_report --out=<a directory> and an analysis over a damaged cached
  array end with one `error:` line naming the path, and leave nothing."""
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             PYTHONPATH=REPO)

  def run(script, *flags):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", script), *flags],
        capture_output=True, text=True, env=env, timeout=120, check=False)

  proc = run("make_report.py", f"--results_dir={res['path']}",
             f"--out={tmp_path}", "--num_thumbs=0")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      f"error: out='{tmp_path}' is a directory"), proc.stderr[-2000:]
  assert os.listdir(tmp_path) == []
  # A copy of the run and of its cache (read with --activation_dir: the
  # cache a run's arrays are trusted in), whose P was damaged after its
  # check record.
  copy = tmp_path / "run"
  shutil.copytree(res["path"], copy)
  arrays = json.load(open(copy / "arrays.json"))
  p_path = str(copy / os.path.relpath(arrays["concept_activations"],
                                      res["path"]))
  with open(p_path, "r+b") as f:
    f.seek(-4, os.SEEK_END)
    f.write(b"\xff\xff\xff\xff")
  proc = run("stability.py", f"--results_dir={copy}", "--num_resamples=2",
             "--layers=layer4", f"--activation_dir={copy}")
  assert proc.returncode != 0 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: cached array {p_path} is damaged") and (
      "CRC-32" in last), last


def test_an_unwritable_out_dir_is_refused_before_the_work(res, tmp_path):
  """Issue 25: stability --out_dir=<read-only> failed after minutes of
  work. A million resamples would take long: the check comes first."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  blocker = tmp_path / "file"
  blocker.write_text("a file, not a directory")
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "scripts", "stability.py"),
       f"--results_dir={res['path']}", "--num_resamples=1000000",
       f"--out_dir={blocker / 'analysis'}"],
      capture_output=True, text=True, env=env, timeout=120, check=False)
  # Bad input, found before the work: exit 2 (docs/cli.md).
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: out_dir='{blocker / 'analysis'}' cannot be "
                         "created"), last
