"""HTML report: self-contained, complete, loads in Chromium without errors."""

import csv
import html.parser
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from jax_dissect import analyses
from jax_dissect import report
from jax_dissect.store import results as results_lib
from tests.helpers import synthetic_run as synth

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get update && apt-get "
    "install -y chromium)")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  """A results dir with stability + profile analyses and images on disk."""
  root = tmp_path_factory.mktemp("demo")
  world = synth.make_world(n_per_class=6)
  path = synth.write_results(str(root / "res"), world)
  synth.write_images(str(root / "images"), world)
  results = results_lib.load_run(path)
  analysis = results.analysis_dir()
  results_lib.write_analysis(analyses.run(
      "stability", results, num_resamples=3, top_ks=(5,)), analysis)
  table = root / "categories.tsv"
  table.write_text("".join(f"{c}\tobject\n" for c in synth.CLASSES))
  results_lib.write_analysis(analyses.run(
      "profile", results, categorizer="table", category_table=str(table)),
                             analysis)
  out = report.build_report(results, image_root=str(root / "images"),
                            num_thumbs=3)
  return {"results": results, "html": out, "root": root, "world": world}


class _Parser(html.parser.HTMLParser):

  def __init__(self):
    super().__init__()
    self.tags = []
    self.external = []

  def handle_starttag(self, tag, attrs):
    self.tags.append(tag)
    for k, v in attrs:
      if k in ("src", "href") and v and not v.startswith(("data:", "#")):
        self.external.append(v)


def test_report_is_self_contained(demo):
  with open(demo["html"], encoding="utf-8") as f:
    page = f.read()
  assert page.startswith("<!DOCTYPE html>")
  parser = _Parser()
  parser.feed(page)
  assert parser.external == []  # no file or network references at all
  assert {"table", "script", "style"} <= set(parser.tags)
  assert not re.search(r"https?://", page)
  # Every thumbnail (3 per neuron, many shared) is embedded exactly once.
  n_jpegs = page.count("data:image/jpeg;base64,")
  top3 = {i for n in demo["results"].neurons for i in n.top_images[:3]}
  assert n_jpegs == len(top3)
  assert page.count("data:image/png;base64,") == 2  # profile + tau charts
  for label in ("goldfish", "tabby cat", "Label stability per layer"):
    assert label in page


def test_report_data_and_missing_images(demo, tmp_path):
  results = demo["results"]
  data = report.collect_report_data(results, image_root=str(tmp_path),
                                    num_thumbs=2)
  assert [l["name"] for l in data["layers"]] == ["layer4", "fc"]
  fc0 = data["layers"][1]["neurons"][0]
  assert fc0["label"] == "goldfish" and len(fc0["images"]) == 2
  assert len(fc0["alternatives"]) == 5
  assert fc0["stability.agreement"] is not None
  assert fc0["stability.score_ci_low"] <= fc0["score"] + 1e-5
  assert fc0["profile_neurons.category"] == "object"
  assert all(v is None for v in data["thumbs"].values())  # wrong image root
  assert [c["key"] for c in data["columns"]] == [
      "profile_neurons.category", "stability.agreement",
      "stability.score_ci_low", "stability.score_ci_high"]
  assert data["meta"]["concepts"] == 20
  # A label that tries to close the script tag stays inside the JSON.
  data["layers"][0]["neurons"][0]["label"] = "</script><b>x"
  page = report.render_html(data)
  assert "</script><b>x" not in page
  with pytest.raises(ValueError, match="num_thumbs must be >= 0"):
    report.collect_report_data(results, num_thumbs=-1)
  with pytest.raises(ValueError, match="is a directory"):
    report.build_report(results, str(tmp_path))
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


def _chromium(*args, timeout=90):
  with tempfile.TemporaryDirectory() as profile_dir:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-quic", "--no-first-run",
           "--disable-background-networking",
           "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile_dir}", "--enable-logging=stderr",
           "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _load(path):
  """Loads a page headless; returns (final DOM, console messages)."""
  proc = _chromium("--dump-dom", "file://" + os.path.abspath(path))
  assert proc.returncode == 0, proc.stderr[-2000:]
  console = [l for l in proc.stderr.splitlines() if ":CONSOLE" in l]
  return proc.stdout, console


@needs_chromium
def test_report_loads_in_chromium_without_errors(demo):
  dom, console = _load(demo["html"])
  assert console == [], console
  assert 'data-report-ready="1"' in dom
  assert "data-report-errors=" not in dom
  rows = re.findall(r'<tr data-unit="(\d+)"', dom)
  assert rows == [str(i) for i in range(8)]  # first layer, sorted by unit
  assert dom.count("<img ") >= 8


@needs_chromium
def test_chromium_check_catches_a_broken_page(demo, tmp_path):
  # The harness must see a script error: break the page on purpose.
  data = report.collect_report_data(demo["results"], num_thumbs=0)
  del data["layers"][0]["neurons"][0]["alternatives"]
  path = tmp_path / "broken.html"
  path.write_text(report.render_html(data), encoding="utf-8")
  dom, console = _load(path)
  assert any("Uncaught" in l for l in console), console
  assert 'data-report-errors="1"' in dom
  assert 'data-report-ready="1"' not in dom


@needs_chromium
def test_url_hash_sorts_and_filters(demo):
  url = demo["html"] + "#layer=layer4&sort=-stability.agreement&min=-100"
  dom, console = _load(url)
  assert console == []
  units = [int(u) for u in re.findall(r'<tr data-unit="(\d+)"', dom)]
  rows = {r.unit: r for r in demo["results"].layer_neurons("layer4")}
  assert sorted(units) == list(range(8))
  with open(os.path.join(demo["results"].path, "analysis",
                         "stability.csv"), newline="") as f:
    agreement = {int(r["unit"]): float(r["agreement"])
                 for r in csv.DictReader(f) if r["layer"] == "layer4"}
  assert [agreement[u] for u in units] == sorted(agreement.values(),
                                                  reverse=True)
  label = rows[2].description
  dom, _ = _load(demo["html"] + "#layer=layer4&filter=" + label.split()[0])
  assert re.findall(r'<tr data-unit="(\d+)"', dom)[0] == "2"
  assert "of 8 neurons" in dom


def test_shared_column_titles_name_their_analysis(tmp_path):
  world = synth.make_world(n_per_class=2)
  run = results_lib.load_run(synth.write_results(str(tmp_path / "res"),
                                                 world))
  unit = run.layer_neurons("layer4")[0]
  for name, extra in (("scoring", "spearman"), ("linear_explanations", "bias")):
    results_lib.write_analysis(results_lib.AnalysisOutput(name, tables={
        f"{name}_table": results_lib.Table(
            [{"layer": "layer4", "unit": unit.unit, "correlation": 0.5,
              extra: 1.0}], per_neuron=True)}), run.analysis_dir())
  data = report.collect_report_data(run, num_thumbs=0)
  titles = sorted(c["title"] for c in data["columns"])
  assert titles == ["bias", "linear_explanations correlation",
                    "scoring correlation", "spearman"], titles
