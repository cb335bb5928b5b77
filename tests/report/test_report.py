"""HTML report: self-contained, its images found by default, unique column
titles, options of each analysis; in a real Chromium (DevTools protocol):
thumbnails visible, a neuron's page, tabs, and a 10,000-neuron report."""

import html.parser
import json
import os
import re
import time

from PIL import Image
import pytest

from jax_dissect import analyses
from jax_dissect import report
from jax_dissect.data import probes
from jax_dissect.report import thumbnails
from jax_dissect.store import results as results_lib
from tests.helpers import browser
from tests.helpers import report_runs
from tests.helpers import synthetic_run as synth

needs_chromium = pytest.mark.skipif(
    browser.CHROMIUM is None,
    reason="chromium is not installed (Debian: apt-get update && apt-get "
    "install -y chromium)")
BASIS = "sae:layer4"


_sorted_world = report_runs.sorted_world
_write_run = report_runs.write_run


def _planted_outputs(run):
  """Outputs of the analyses that the report must show with no code of its
  own: a DnD-like table and document (crop boxes), a basis of units that
  are not the run's neurons, a backbones-like table and chart."""
  layer4 = run.layer_neurons("layer4")
  images = run.image_ids
  dnd = results_lib.AnalysisOutput(
      "dnd",
      tables={"dnd": results_lib.Table(
          [{"layer": "layer4", "unit": 1, "description": "orange fish",
            "score": 0.9, "candidates": "orange fish; fish"}],
          "DnD", per_neuron=True, neuron_columns=("description", "score"))},
      documents={"dnd_details": [{
          "layer": "layer4", "unit": 1, "labels": ["orange fish", "fish"],
          "candidates": ["orange fish", "fish"], "score": 0.9,
          "top_images": [{"image": layer4[1].top_images[0],
                          "box": [0, 0, 187, 187], "activation": 2.5},
                         {"image": layer4[1].top_images[1], "box": None,
                          "activation": 2.0}]}]})
  basis = results_lib.AnalysisOutput(
      "features", tables={"features": results_lib.Table(
          [{"layer": "layer4", "unit": u, "description": f"feature {u}",
            "similarity": 0.1 * u, "correlation": 0.5, "q_value": 0.01,
            "top_images": ";".join(images[u:u + 3])} for u in range(6)],
          "SAE features", per_neuron=True, basis=BASIS)})
  backbones = results_lib.AnalysisOutput(
      "backbones",
      tables={"backbones": results_lib.Table(
          [{"backbone": "resnet18", "interpretable": 0.4},
           {"backbone": "resnet50", "interpretable": 0.5}],
          "Interpretable share per backbone")},
      charts={"backbones": results_lib.Chart(
          lambda p: Image.new("RGB", (40, 30), (200, 0, 0)).save(p),
          "Backbones chart")})
  for output in (dnd, basis, backbones):
    results_lib.write_analysis(output, run.analysis_dir(),
                               options={"planted": True})


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  """A run with stability (run twice, other options), profile and planted
  outputs; its images on disk in the probe folder its config names."""
  root = tmp_path_factory.mktemp("demo")
  world = _sorted_world(n_per_class=6)
  images = synth.write_images(str(root / "images"), world)
  run = _write_run(str(root / "res"), world, images)
  analysis = run.analysis_dir()
  for resamples in (2, 3):
    config = analyses.make_config("stability", {"num_resamples": resamples,
                                                "top_ks": (5,)})
    results_lib.write_analysis(analyses.run("stability", run, config),
                               analysis, options=config.to_dict())
  table = root / "categories.tsv"
  table.write_text("".join(f"{c}\tobject\n" for c in synth.CLASSES))
  results_lib.write_analysis(analyses.run(
      "profile", run, categorizer="table", category_table=str(table)),
                             analysis)
  _planted_outputs(run)
  out = report.build_report(run, num_thumbs=3)  # No image_root.
  return {"results": run, "html": out, "root": root, "world": world}


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


def _page_data(path):
  with open(path, encoding="utf-8") as f:
    page = f.read()
  found = re.search(r'<script type="application/json" id="report-data">'
                    r"(.*?)</script>", page, re.S)
  return page, json.loads(found.group(1).replace("<\\/", "</"))


def test_report_is_self_contained_with_the_run_images(demo):
  page, data = _page_data(demo["html"])
  assert page.startswith("<!DOCTYPE html>")
  parser = _Parser()
  parser.feed(page)
  assert parser.external == []  # no file or network references at all
  assert {"table", "script", "style"} <= set(parser.tags)
  assert not re.search(r"https?://", page)
  # Every top image of a neuron (10 kept by the run), of a basis unit and of
  # a DnD record is embedded once, found in the run's probe folder.
  run = demo["results"]
  wanted = {i for n in run.neurons for i in n.top_images[:10]}
  wanted |= {i for u in range(6) for i in run.image_ids[u:u + 3]}
  assert set(data["thumbs"]) == wanted
  assert all(v and v.startswith("data:image/jpeg") for v in
             data["thumbs"].values())
  assert page.count("data:image/jpeg;base64,") == len(wanted)
  assert page.count("data:image/png;base64,") == 3  # profile x2, backbones


def test_views_columns_and_runs(demo):
  _, data = _page_data(demo["html"])
  views = {v["id"]: v for v in data["views"]}
  assert list(views) == ["layer4", "fc", f"basis:{BASIS}"]
  fc0 = views["fc"]["rows"][0]
  assert fc0["label"] == "goldfish" and len(fc0["images"]) == 10
  assert len(fc0["alternatives"]) == 5
  assert fc0["stability.agreement"] is not None
  assert fc0["stability.score_ci_low"] <= fc0["similarity"] + 1e-5
  assert fc0["profile_neurons.category"] == "object"
  columns = views["fc"]["columns"]
  titles = [c["title"] for c in columns]
  assert len(set(titles)) == len(titles)
  assert not set(titles) & set(report.html.BASE_TITLES)
  # DnD's "score" is not a second "score" of the table.
  assert {c["key"]: c["title"] for c in columns}["dnd.score"] == "score"
  shown = [c["key"] for c in columns if c["shown"]]
  assert "dnd.candidates" not in shown  # Only on the neuron's page.
  assert views["layer4"]["rows"][1]["dnd.candidates"] == "orange fish; fish"
  basis = views[f"basis:{BASIS}"]
  assert basis["rows"][2]["label"] == "feature 2"
  assert basis["rows"][2]["similarity"] == pytest.approx(0.2)
  assert basis["rows"][2]["images"] == demo["results"].image_ids[2:5]
  assert [c["title"] for c in basis["columns"]] == ["correlation", "q_value"]
  assert data["details"]["layer4/1"]["dnd"]["top_images"][0]["box"] == [
      0, 0, 187, 187]
  # The stability rerun with other options: both option sets listed.
  stability = next(r for r in data["runs"] if r["analysis"] == "stability")
  assert stability["options"]["num_resamples"] == 3
  assert [p["options"]["num_resamples"] for p in stability["previous"]] == [2]
  assert data["tables"][0]["title"] == "Interpretable share per backbone"
  assert {c["analysis"] for c in data["charts"]} == {"profile", "backbones"}


def test_column_titles_are_unique_across_analyses(tmp_path):
  world = synth.make_world(n_per_class=2)
  run = results_lib.load_run(synth.write_results(str(tmp_path / "res"),
                                                 world))
  unit = run.layer_neurons("layer4")[0].unit
  for name, extra in (("scoring", "spearman"), ("linear_explanations", "bias"),
                      ("other", "similarity"), ("dnd", "label")):
    results_lib.write_analysis(results_lib.AnalysisOutput(name, tables={
        f"{name}_table": results_lib.Table(
            [{"layer": "layer4", "unit": unit, "correlation": 0.5,
              extra: 1.0}], per_neuron=True)}), run.analysis_dir())
  data = report.collect_report_data(run, num_thumbs=0, page_thumbs=0)
  titles = sorted(c["title"] for c in data["views"][0]["columns"])
  assert titles == ["bias", "dnd correlation", "dnd label",
                    "linear_explanations correlation", "other correlation",
                    "other similarity", "scoring correlation", "spearman"]


def test_bad_options_and_missing_images(demo, tmp_path):
  results = demo["results"]
  data = report.collect_report_data(results, image_root=str(tmp_path),
                                    num_thumbs=2, page_thumbs=2)
  assert all(v is None for v in data["thumbs"].values())  # wrong root
  assert len(data["views"][1]["rows"][0]["images"]) == 2
  # A label that tries to close the script tag stays inside the JSON.
  data["views"][0]["rows"][0]["label"] = "</script><b>x"
  data["views"][0]["rows"][0]["similarity"] = float("nan")
  page = report.render_html(data)
  assert "</script><b>x" not in page
  script = page.split('id="report-data">')[1].split("</script>")[0]
  assert json.loads(script)["views"][0]["rows"][0]["similarity"] is None
  with pytest.raises(ValueError, match="num_thumbs and page_thumbs must be"):
    report.collect_report_data(results, num_thumbs=-1)
  with pytest.raises(ValueError, match="is a directory"):
    report.build_report(results, str(tmp_path))
  assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


class _MemoryProbe(probes.ProbeSet):
  """Images that are not files (as a TFDS data set's)."""

  def __init__(self, ids):
    self._ids = list(ids)
    self.loads = 0

  @property
  def ids(self):
    return self._ids

  def load(self, index):
    self.loads += 1
    return Image.new("RGB", (64, 48), (index % 256, 40, 90))

  def fingerprint(self):
    return "memory"

  def describe(self):
    return "memory"


def test_runs_without_image_files_save_thumbnails_the_report_uses(
    tmp_path, monkeypatch):
  world = synth.make_world(n_per_class=3)
  run = results_lib.load_run(synth.write_results(str(tmp_path / "res"),
                                                 world))
  probe = _MemoryProbe(run.image_ids)
  monkeypatch.setattr(thumbnails, "_probe", lambda r: probe)
  folder = thumbnails.save_thumbnails(run, per_neuron=2, size=32)
  wanted = {i for n in run.neurons for i in n.top_images[:2]}
  assert probe.loads == len(wanted)
  index = json.load(open(os.path.join(folder, "index.json")))
  assert set(index) == wanted
  with Image.open(os.path.join(folder, index[min(wanted)])) as img:
    assert max(img.size) == 32
  # The report reads them, without the probe set.
  monkeypatch.setattr(thumbnails, "_probe", lambda r: (_ for _ in ()).throw(
      ValueError("no such data set here")))
  data = report.collect_report_data(run, num_thumbs=2, page_thumbs=2)
  assert {k for k, v in data["thumbs"].items() if v} == wanted
  # An image folder needs no copies.
  images = synth.write_images(str(tmp_path / "images"), world)
  monkeypatch.setattr(thumbnails, "_probe",
                      lambda r: probes.ImageFolder(images))
  assert thumbnails.save_thumbnails(run) is None


# ----------------------------------------------------------------------------
# In Chromium.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chrome():
  if browser.CHROMIUM is None:
    pytest.skip("chromium is not installed")
  with browser.Chromium(width=1400, height=900) as c:
    yield c


def _url(path, fragment=""):
  return "file://" + os.path.abspath(path) + fragment


def _rows(chrome):
  return chrome.evaluate("Array.from(document.querySelectorAll('#rows tr'))"
                         ".map(function(r){return +r.dataset.unit})")


@needs_chromium
def test_table_shows_thumbnails_after_the_label(demo, chrome):
  chrome.console.clear()
  chrome.open(_url(demo["html"]))
  assert chrome.evaluate("document.documentElement.getAttribute("
                         "'data-report-errors')") is None
  assert _rows(chrome) == list(range(8))  # first layer, sorted by unit
  heads = chrome.evaluate("Array.from(document.querySelectorAll('#head th "
                          ".t')).map(function(t){return t.textContent})")
  assert heads[:5] == ["unit", "label", "top images", "similarity",
                       "alternatives"]
  assert len(heads) == len(set(heads))
  # The first row's 3 thumbnails are decoded and inside a 1400 px window.
  boxes = chrome.evaluate(
      "Array.from(document.querySelectorAll('#rows tr:first-child img'))"
      ".map(function(i){var r=i.getBoundingClientRect();"
      "return [i.complete && i.naturalWidth, r.left, r.right, r.top]})")
  assert len(boxes) == 3
  for loaded, left, right, top in boxes:
    assert loaded > 0 and 0 <= left < right <= 1400 and 0 < top < 900
  assert not [m for m in chrome.console if m.startswith(("error",
                                                         "exception"))]


@needs_chromium
def test_a_click_opens_the_neuron_page(demo, chrome):
  chrome.open(_url(demo["html"], "#tab=layer4"))
  chrome.click("tr[data-unit='1'] td.label a")
  chrome.wait_for("!document.getElementById('unit').hidden")
  assert chrome.evaluate("location.hash") == "#tab=layer4&unit=1"
  heading = chrome.evaluate("document.querySelector('#unit h2').textContent")
  label = demo["results"].layer_neurons("layer4")[1].description
  assert heading == f"layer4 \u00b7 unit 1: {label}"
  big = chrome.evaluate(
      "Array.from(document.querySelectorAll('#top-images img'))"
      ".map(function(i){return [i.naturalWidth, i.getBoundingClientRect()"
      ".width]})")
  assert len(big) == 10 and all(w > 0 and shown >= 160 for w, shown in big)
  # DnD's record with its crop box drawn over the first image.
  assert chrome.evaluate("document.querySelectorAll('.crops figure')"
                         ".length") == 2
  box = chrome.evaluate("(function(){var b=document.querySelector("
                        "'.crops .box').style;return [b.left,b.width]})()")
  assert box == ["0%", "49.8667%"]  # 187 of DnD's 375 px.
  sections = chrome.evaluate(
      "Array.from(document.querySelectorAll('.analysis-values'))"
      ".map(function(s){return s.dataset.analysis})")
  assert {"stability", "dnd", "profile_neurons"} - set(sections) <= {
      "profile_neurons"}
  assert "stability" in sections and "dnd" in sections
  chrome.click("#unit .nav button")  # Back to the table.
  chrome.wait_for("!document.getElementById('units').hidden")
  assert _rows(chrome) == list(range(8))


@needs_chromium
def test_url_hash_sorts_and_filters(demo, chrome):
  chrome.open(_url(demo["html"], "#layer=layer4&sort=-stability.agreement"
                   "&min=-100"))
  units = _rows(chrome)
  run = demo["results"]
  rows = {r["unit"]: r for r in results_lib.read_table(os.path.join(
      run.analysis_dir(), "stability.csv")) if r["layer"] == "layer4"}
  agreement = [float(rows[str(u)]["agreement"]) for u in units]
  assert sorted(units) == list(range(8))
  assert agreement == sorted(agreement, reverse=True)
  label = run.layer_neurons("layer4")[2].description
  chrome.open(_url(demo["html"], "#tab=layer4&filter=" + label.split()[0]))
  assert _rows(chrome)[0] == 2
  assert "of 8 neurons" in chrome.evaluate(
      "document.getElementById('count').textContent")
  chrome.type_text("#filter", "zzz-no-such-label")
  assert _rows(chrome) == []


@needs_chromium
def test_basis_charts_tables_and_analyses_tabs(demo, chrome):
  chrome.open(_url(demo["html"]))
  tabs = chrome.evaluate("Array.from(document.querySelectorAll('#tabs "
                         "button')).map(function(b){return b.textContent})")
  assert tabs == ["layer4 (8)", "fc (8)", f"{BASIS} (6)", "Charts (3)",
                  "Tables (4)", "Analyses (5)"]
  chrome.click(f"#tabs button[data-tab='basis:{BASIS}']")
  assert _rows(chrome) == list(range(6))
  assert chrome.evaluate("document.querySelectorAll('#rows tr:first-child "
                         "img').length") == 3
  chrome.click("#tabs button[data-tab='charts']")
  assert chrome.evaluate("Array.from(document.querySelectorAll('#charts "
                         "img')).filter(function(i){return i.naturalWidth})"
                         ".length") == 3
  chrome.click("#tabs button[data-tab='tables']")
  assert "Interpretable share per backbone" in chrome.evaluate(
      "document.getElementById('tables').textContent")
  chrome.click("#tabs button[data-tab='analyses']")
  text = chrome.evaluate("document.querySelector('#runs tr[data-analysis="
                         "\"stability\"]').textContent")
  assert "num_resamples = 3" in text and "num_resamples = 2" in text


@needs_chromium
def test_chromium_check_catches_a_broken_page(demo, chrome, tmp_path):
  # The harness must see a script error: break the page on purpose.
  data = report.collect_report_data(demo["results"], num_thumbs=0,
                                    page_thumbs=0)
  data["meta"] = None  # Object.keys(null) throws.
  path = tmp_path / "broken.html"
  path.write_text(report.render_html(data), encoding="utf-8")
  chrome.console.clear()
  chrome.open(_url(path))
  assert chrome.evaluate("document.documentElement.getAttribute("
                         "'data-report-errors')") == "1"
  assert chrome.evaluate("document.documentElement.getAttribute("
                         "'data-report-ready')") is None
  assert any(m.startswith("exception") for m in chrome.console)


@needs_chromium
def test_ten_thousand_neurons_load_fast(tmp_path, chrome):
  world = _sorted_world(n_per_class=8)
  images = synth.write_images(str(tmp_path / "images"), world)
  run = report_runs.write_big_run(tmp_path / "big", images)
  start = time.perf_counter()
  path = report.build_report(run)
  built = time.perf_counter() - start
  took = chrome.open(_url(path))
  ready_ms = int(chrome.evaluate("document.documentElement.getAttribute("
                                 "'data-report-ready-ms')"))
  assert len(_rows(chrome)) == 100  # One page of rows.
  assert "10000 of 10000 neurons" in chrome.evaluate(
      "document.getElementById('count').textContent")
  # Sorting all 10,000 and filtering answer at once.
  start = time.perf_counter()
  chrome.click("#head th[data-key='similarity']")
  top = _rows(chrome)[0]
  sort_s = time.perf_counter() - start
  assert top == max(range(10_000), key=lambda k: run.neurons[k].similarity)
  print(f"10,000-neuron report: built in {built:.1f} s, "
        f"{os.path.getsize(path) / 2**20:.1f} MiB, loaded in {took:.2f} s "
        f"(ready at {ready_ms} ms), sorted in {sort_s:.2f} s")
  assert took < 10 and sort_s < 5  # Generous: 2 shared cores.
