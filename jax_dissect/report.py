"""A self-contained static HTML report of a results directory.

One file with inline CSS and JS that opens from disk with no server and no
network: per layer, a sortable and filterable table of neurons (unit, label,
score, alternatives, and the columns of every per-neuron table an analysis
wrote, e.g. stability's agreement) with thumbnails of the top activating
images embedded as base64 data URIs, plus the charts and tables the analyses
wrote. Analyses are found through their manifests (results.analysis_outputs),
so a new analysis needs no change here.

The URL hash sets the initial view, e.g. report.html#layer=fc&sort=-score
(a column key; "-" for descending), &filter=dog (label, alternative or unit),
&min=0.16 (minimum score).

Image ids in neurons.jsonl are resolved to files as `image_root/<id>` (or the
id itself as a path when no root is given), or by a user `image_loader`;
images that cannot be found get a placeholder. Each distinct image is
embedded once, so the file grows with the number of distinct top images.
"""

from __future__ import annotations

import base64
import collections
import datetime
import html
import io
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
from PIL import Image

from jax_dissect import files
from jax_dissect import results as results_lib

ImageLoader = Callable[[str], "Image.Image | None"]

# Charts written by the analyses, shown in this order when present.
_CHARTS = (("profile.png", "Layer profile: category of interpretable neurons"),
           ("interpretable_vs_tau.png", "Interpretable neurons vs tau"))


def _file_loader(image_root: str | None) -> ImageLoader:
  def load(image_id: str):
    path = os.path.join(image_root, image_id) if image_root else image_id
    if not os.path.isfile(path):
      return None
    try:
      with Image.open(path) as img:
        img.load()
        return img.convert("RGB")
    except (OSError, ValueError, SyntaxError):
      return None
  return load


def thumbnail_data_uri(image: Image.Image, size: int = 96,
                       quality: int = 80) -> str:
  """A JPEG data URI of `image` shrunk to fit (size, size)."""
  img = image.convert("RGB")
  img.thumbnail((size, size))
  buf = io.BytesIO()
  img.save(buf, format="JPEG", quality=quality)
  return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _png_data_uri(path: str) -> str:
  with open(path, "rb") as f:
    return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def _maybe_float(v: Any) -> float | None:
  try:
    x = float(v)
  except (TypeError, ValueError):
    return None
  return x if x == x else None  # NaN -> None


def _value(v: str) -> Any:
  """A CSV cell for the page: a number if it reads as one, else the text."""
  x = _maybe_float(v)
  if x is not None:
    return x
  return None if v in ("", "nan", "NaN", "None") else v


def _neuron_columns(entries: Sequence[results_lib.OutputEntry]
                    ) -> tuple[list[dict[str, Any]],
                               dict[tuple[str, int], dict[str, Any]]]:
  """Columns of the per-neuron analysis tables, and their values.

  Returns:
    (columns [{key, title, num, analysis}], {(layer, unit): {key: value}}).
  """
  columns: list[dict[str, Any]] = []
  values: dict[tuple[str, int], dict[str, Any]] = {}
  for e in entries:
    if e.kind != "table" or not e.per_neuron:
      continue
    rows = results_lib.read_table(e.path)
    if not rows or "layer" not in rows[0] or "unit" not in rows[0]:
      logging.warning("report: %s is not a per-neuron table; skipped", e.path)
      continue
    names = list(e.neuron_columns) or [c for c in rows[0]
                                       if c not in ("layer", "unit")]
    names = [c for c in names if c in rows[0]]
    stem = os.path.splitext(e.file)[0]
    keys = {c: f"{stem}.{c}" for c in names}
    numeric = {c: all(_maybe_float(r[c]) is not None or r[c] in ("", "nan")
                      for r in rows) for c in names}
    for c in names:
      columns.append({"key": keys[c], "title": c, "num": numeric[c],
                      "analysis": e.analysis})
    for r in rows:
      try:
        where = (r["layer"], int(r["unit"]))
      except ValueError:
        continue
      cell = values.setdefault(where, {})
      for c in names:
        cell[keys[c]] = _value(r[c])
  # A title two analyses share (e.g. "correlation" of scoring and of linear
  # explanations) says whose it is.
  titles = collections.Counter(c["title"] for c in columns)
  for c in columns:
    if titles[c["title"]] > 1:
      c["title"] = f"{c['analysis']} {c['title']}"
  return columns, values


def collect_report_data(results: results_lib.Run, *,
                        analysis_dir: str | None = None,
                        image_root: str | None = None,
                        image_loader: ImageLoader | None = None,
                        num_thumbs: int = 5, thumb_size: int = 96,
                        layers: Sequence[str] | None = None,
                        title: str | None = None) -> dict[str, Any]:
  """Gathers everything the page shows into one JSON-serialisable dict.

  The analyses' outputs are found through their manifests
  (results.analysis_outputs): charts are shown as images, tables as tables,
  and per-neuron tables as extra columns of the layers' neuron tables.
  """
  if num_thumbs < 0 or thumb_size < 8:
    raise ValueError(f"num_thumbs must be >= 0 and thumb_size >= 8; got "
                     f"{num_thumbs}, {thumb_size}")
  analysis_dir = results.analysis_dir(analysis_dir)
  layers = [results.check_layer(l) for l in (layers or results.layers)]
  entries = results_lib.analysis_outputs(analysis_dir)
  extra_columns, extra = _neuron_columns(entries)
  loader = image_loader or _file_loader(image_root)
  thumbs: dict[str, str | None] = {}
  layer_data = []
  for layer in layers:
    rows = []
    for n in results.layer_neurons(layer):
      images = list(n.top_images)[:num_thumbs]
      for image_id in images:
        if image_id not in thumbs:
          img = loader(image_id)
          thumbs[image_id] = (thumbnail_data_uri(img, thumb_size)
                              if img is not None else None)
      rows.append({"unit": n.unit, "label": n.description,
                   "score": n.similarity,
                   "alternatives": [[c, v] for c, v in n.alternatives],
                   "images": images, **extra.get((layer, n.unit), {})})
    layer_data.append({"name": layer, "neurons": rows})
  missing = [k for k, v in thumbs.items() if v is None]
  if missing:
    logging.warning("report: %d of %d images not found or unreadable (e.g. "
                    "%r); pass image_root or an image_loader", len(missing),
                    len(thumbs), missing[0])
  charts, tables = [], []
  for e in entries:
    if e.kind == "chart":
      charts.append({"title": e.caption or e.file,
                     "src": _png_data_uri(e.path)})
    elif e.kind == "table" and e.show and not e.per_neuron:
      rows = results_lib.read_table(e.path)
      if rows:
        tables.append({"title": e.caption or e.file, "columns": list(rows[0]),
                       "rows": [list(r.values()) for r in rows]})
  cfg = results.config
  meta = {k: cfg[k] for k in ("target_model", "clip_model", "d_probe",
                              "concept_set", "similarity_fn", "pool_mode")
          if k in cfg}
  meta.setdefault("similarity_fn", results.similarity_fn)
  meta["probe images"] = len(results.image_ids)
  meta["concepts"] = len(results.concepts)
  return {
      "title": title or "jax_dissect report: " + os.path.basename(
          os.path.abspath(results.path)),
      "generated": datetime.datetime.now(datetime.timezone.utc).strftime(
          "%Y-%m-%d %H:%M UTC"),
      "meta": meta, "layers": layer_data, "thumbs": thumbs,
      "charts": charts, "tables": tables, "columns": extra_columns,
  }


def _json_for_script(data: Any) -> str:
  """JSON safe inside <script>: no '</' or HTML comment openers."""
  return (json.dumps(data, separators=(",", ":"), ensure_ascii=True)
          .replace("</", "<\\/").replace("<!--", "<\\!--"))


def render_html(data: dict[str, Any]) -> str:
  """The report page for `data` from collect_report_data."""
  return (_TEMPLATE.replace("%%TITLE%%", html.escape(data["title"]))
          .replace("%%CSS%%", _CSS).replace("%%JS%%", _JS)
          .replace("%%DATA%%", _json_for_script(data)))


def build_report(results: results_lib.Run | str,
                 out_path: str | None = None, **kwargs) -> str:
  """Writes the HTML report of a run.

  Args:
    results: a results.Run or the results directory path.
    out_path: the HTML file (default <results>/report.html); an existing
      directory is an error.
    **kwargs: collect_report_data's options: analysis_dir (default
      <results>/analysis), image_root, image_loader, num_thumbs (default 5),
      thumb_size (default 96 px), layers, title.

  Returns:
    The path written.
  """
  if not isinstance(results, results_lib.Run):
    results = results_lib.load_run(results)
  out_path = out_path or os.path.join(results.path, "report.html")
  if os.path.isdir(out_path):
    raise ValueError(f"out={out_path!r} is a directory; give the HTML file's "
                     "path, e.g. report.html")
  page = render_html(collect_report_data(results, **kwargs))
  files.write_text(out_path, page)
  logging.info("report: wrote %s (%.1f MiB)", out_path,
               len(page.encode()) / 2**20)
  return out_path


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>%%TITLE%%</title>
<script>
window.reportErrors = [];
window.addEventListener("error", function (e) {
  window.reportErrors.push(String(e.message || e));
  document.documentElement.setAttribute("data-report-errors",
                                        String(window.reportErrors.length));
  var banner = document.getElementById("errors");
  if (!banner && document.body) {
    banner = document.createElement("div");
    banner.id = "errors";
    document.body.insertBefore(banner, document.body.firstChild);
  }
  if (banner) banner.textContent = "Report error: " + window.reportErrors.join("; ");
});
</script>
<style>%%CSS%%</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <div id="meta"></div>
</header>
<main>
  <nav id="tabs" aria-label="layers"></nav>
  <section id="layer">
    <div class="controls">
      <input id="filter" type="search" placeholder="Filter: label, alternative or unit"
             aria-label="filter">
      <label>min score <input id="minscore" type="number" step="any"></label>
      <span id="count"></span>
      <span class="pager">
        <button id="prev" type="button">&lsaquo; prev</button>
        <span id="page"></span>
        <button id="next" type="button">next &rsaquo;</button>
      </span>
    </div>
    <div class="scroll">
      <table id="neurons">
        <thead><tr id="head"></tr></thead>
        <tbody id="rows"></tbody>
      </table>
    </div>
  </section>
  <section id="analyses"></section>
</main>
<footer id="footer"></footer>
<script type="application/json" id="report-data">%%DATA%%</script>
<script>%%JS%%</script>
</body>
</html>
"""

_CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --accent: #2f6fdd;
        --bg: #f7f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto,
       sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 14px 24px 8px; background: #fff;
         border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 6px; }
h2 { font-size: 16px; margin: 22px 0 8px; }
#meta span { display: inline-block; margin: 0 14px 4px 0; color: var(--muted); }
#meta b { color: var(--fg); font-weight: 600; }
main { padding: 10px 24px 24px; }
nav button { border: 1px solid var(--line); background: #fff; padding: 6px 14px;
             margin: 0 4px 8px 0; border-radius: 6px; cursor: pointer;
             font: inherit; }
nav button.active { background: var(--accent); color: #fff;
                    border-color: var(--accent); }
.controls { display: flex; gap: 14px; align-items: center; flex-wrap: wrap;
            margin-bottom: 8px; }
.controls input[type=search] { width: 280px; padding: 5px 8px;
  border: 1px solid var(--line); border-radius: 6px; font: inherit; }
.controls input[type=number] { width: 80px; padding: 4px 6px;
  border: 1px solid var(--line); border-radius: 6px; font: inherit; }
#count { color: var(--muted); }
.pager { margin-left: auto; }
.pager button { font: inherit; padding: 3px 10px; }
table { border-collapse: collapse; width: 100%; background: #fff;
        border: 1px solid var(--line); }
th, td { padding: 6px 8px; border-bottom: 1px solid var(--line);
         text-align: left; vertical-align: middle; }
th { background: #f0f2f5; position: sticky; top: 0; cursor: pointer;
     user-select: none; white-space: nowrap; }
th.sorted-asc::after { content: " \\25B2"; font-size: 10px; }
th.sorted-desc::after { content: " \\25BC"; font-size: 10px; }
td.num { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.label { font-weight: 600; }
.alts { color: var(--muted); font-size: 12px; }
.alts span { white-space: nowrap; }
.thumbs { display: flex; gap: 3px; }
.thumbs img, .thumbs .missing { width: 64px; height: 64px; object-fit: cover;
  border-radius: 3px; background: #dde1e7; }
.missing { display: inline-block; }
.bar { display: inline-block; height: 6px; background: var(--accent);
       border-radius: 3px; margin-left: 6px; vertical-align: middle; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line);
         padding: 8px; border-radius: 6px; }
figure img { max-width: 100%; display: block; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; }
.scroll { overflow-x: auto; max-width: 100%; }
.small { width: auto; }
.small td, .small th { font-size: 12px; padding: 3px 8px; cursor: default; }
#errors { background: #fde8e8; color: #9b1c1c; padding: 8px 24px; }
footer { color: var(--muted); font-size: 12px; padding: 0 24px 20px; }
"""

_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  var PAGE = 100;
  var state = {layer: 0, key: "unit", dir: 1, filter: "", min: null, page: 0};
  var cols = [
    {key: "unit", title: "unit", num: true},
    {key: "label", title: "label"},
    {key: "score", title: "score", num: true},
    {key: "alternatives", title: "alternatives", sortable: false}
  ];
  (data.columns || []).forEach(function (c) {
    cols.push({key: c.key, title: c.title, num: c.num, extra: true,
               analysis: c.analysis});
  });
  cols.push({key: "images", title: "top activating images", sortable: false});

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    }
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function fmt(x, digits) {
    return (x === null || x === undefined) ? "-" : Number(x).toFixed(digits);
  }

  document.title = data.title;
  document.getElementById("title").textContent = data.title;
  var meta = document.getElementById("meta");
  Object.keys(data.meta).forEach(function (k) {
    var span = el("span");
    span.appendChild(document.createTextNode(k + ": "));
    span.appendChild(el("b", null, data.meta[k]));
    meta.appendChild(span);
  });
  document.getElementById("footer").textContent =
      "Generated by jax_dissect on " + data.generated +
      ". Self-contained: images and charts are embedded.";

  var tabs = document.getElementById("tabs");
  data.layers.forEach(function (layer, i) {
    var b = el("button", {type: "button", "data-layer": String(i)},
               layer.name + " (" + layer.neurons.length + ")");
    b.addEventListener("click", function () {
      state.layer = i; state.page = 0; render();
    });
    tabs.appendChild(b);
  });

  var head = document.getElementById("head");
  cols.forEach(function (c) {
    var th = el("th", {"data-key": c.key}, c.title);
    if (c.sortable !== false) {
      th.addEventListener("click", function () {
        if (state.key === c.key) { state.dir = -state.dir; }
        else { state.key = c.key; state.dir = c.num && c.key !== "unit" ? -1 : 1; }
        state.page = 0; render();
      });
    }
    head.appendChild(th);
  });

  document.getElementById("filter").addEventListener("input", function (e) {
    state.filter = e.target.value.trim().toLowerCase(); state.page = 0; render();
  });
  document.getElementById("minscore").addEventListener("input", function (e) {
    var v = parseFloat(e.target.value);
    state.min = isNaN(v) ? null : v; state.page = 0; render();
  });
  document.getElementById("prev").addEventListener("click", function () {
    if (state.page > 0) { state.page -= 1; render(); }
  });
  document.getElementById("next").addEventListener("click", function () {
    state.page += 1; render();
  });

  function matches(n) {
    if (state.min !== null && !(n.score >= state.min)) return false;
    if (!state.filter) return true;
    if (String(n.unit) === state.filter) return true;
    if (n.label.toLowerCase().indexOf(state.filter) >= 0) return true;
    if (cols.some(function (c) {
      var v = n[c.key];
      return c.extra && !c.num && typeof v === "string" &&
             v.toLowerCase().indexOf(state.filter) >= 0;
    })) return true;
    return n.alternatives.some(function (a) {
      return a[0].toLowerCase().indexOf(state.filter) >= 0;
    });
  }
  function compare(a, b) {
    var x = a[state.key], y = b[state.key];
    if (x === null || x === undefined) return 1;
    if (y === null || y === undefined) return -1;
    if (typeof x === "string") return state.dir * x.localeCompare(y);
    return state.dir * (x - y) || a.unit - b.unit;
  }

  function cell(n, c) {
    var td = el("td");
    if (c.key === "unit") { td.className = "num"; td.textContent = n.unit; }
    else if (c.key === "label") { td.className = "label"; td.textContent = n.label; }
    else if (c.key === "score") { td.className = "num"; td.textContent = fmt(n.score, 4); }
    else if (c.key === "alternatives") {
      td.className = "alts";
      n.alternatives.forEach(function (a, i) {
        if (i) td.appendChild(document.createTextNode(", "));
        td.appendChild(el("span", null, a[0] + " (" + fmt(a[1], 3) + ")"));
      });
    } else if (c.extra) {
      var v = n[c.key];
      td.title = c.analysis + ": " + c.title;
      if (v === null || v === undefined) { td.textContent = "-"; }
      else if (c.num && c.title === "agreement") {
        td.className = "num";
        td.textContent = (100 * v).toFixed(0) + "%";
        td.appendChild(el("span", {"class": "bar",
                                   style: "width:" + (40 * v) + "px"}));
      } else if (c.num) {
        td.className = "num";
        td.textContent = Number.isInteger(v) ? String(v) : fmt(v, 4);
      } else { td.className = "label"; td.textContent = v; }
    } else if (c.key === "images") {
      var box = el("div", {"class": "thumbs"});
      n.images.forEach(function (id) {
        var src = data.thumbs[id];
        var node = src ? el("img", {src: src, alt: id, title: id, loading: "lazy"})
                       : el("span", {"class": "missing", title: id + " (not found)"});
        box.appendChild(node);
      });
      td.appendChild(box);
    }
    return td;
  }

  function render() {
    var layer = data.layers[state.layer];
    Array.prototype.forEach.call(tabs.children, function (b, i) {
      b.className = i === state.layer ? "active" : "";
    });
    Array.prototype.forEach.call(head.children, function (th) {
      th.className = th.getAttribute("data-key") === state.key ?
          (state.dir > 0 ? "sorted-asc" : "sorted-desc") : "";
    });
    var shown = layer ? layer.neurons.filter(matches).sort(compare) : [];
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    state.page = Math.min(state.page, pages - 1);
    var body = document.getElementById("rows");
    body.textContent = "";
    shown.slice(state.page * PAGE, (state.page + 1) * PAGE).forEach(function (n) {
      var tr = el("tr", {"data-unit": String(n.unit)});
      cols.forEach(function (c) { tr.appendChild(cell(n, c)); });
      body.appendChild(tr);
    });
    document.getElementById("count").textContent =
        shown.length + " of " + (layer ? layer.neurons.length : 0) + " neurons";
    document.getElementById("page").textContent = "page " + (state.page + 1) + " / " + pages;
  }

  var analyses = document.getElementById("analyses");
  if (data.charts.length) {
    analyses.appendChild(el("h2", null, "Charts"));
    var charts = el("div", {"class": "charts"});
    data.charts.forEach(function (c) {
      var fig = el("figure");
      fig.appendChild(el("img", {src: c.src, alt: c.title}));
      fig.appendChild(el("figcaption", null, c.title));
      charts.appendChild(fig);
    });
    analyses.appendChild(charts);
  }
  data.tables.forEach(function (t) {
    analyses.appendChild(el("h2", null, t.title));
    var table = el("table", {"class": "small"});
    var tr = el("tr");
    t.columns.forEach(function (c) { tr.appendChild(el("th", null, c)); });
    var thead = el("thead"); thead.appendChild(tr); table.appendChild(thead);
    var tbody = el("tbody");
    t.rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (v) {
        var x = parseFloat(v);
        row.appendChild(el("td", null,
            (v !== "" && !isNaN(x) && String(v).indexOf(".") >= 0) ? x.toFixed(4) : v));
      });
      tbody.appendChild(row);
    });
    table.appendChild(tbody);
    var scroll = el("div", {"class": "scroll"});
    scroll.appendChild(table);
    analyses.appendChild(scroll);
  });

  // Initial view from the URL hash, e.g. #layer=fc&sort=-score&filter=dog&min=0.2
  // (sort: a column key, "-" for descending).
  location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    var kv = part.split("=");
    var k = decodeURIComponent(kv[0] || ""), v = decodeURIComponent(kv[1] || "");
    if (k === "layer") {
      data.layers.forEach(function (l, i) { if (l.name === v) state.layer = i; });
    } else if (k === "sort") {
      var key = v.replace(/^-/, "");
      if (cols.some(function (c) { return c.key === key && c.sortable !== false; })) {
        state.key = key; state.dir = v.charAt(0) === "-" ? -1 : 1;
      }
    } else if (k === "filter") {
      state.filter = v.trim().toLowerCase();
      document.getElementById("filter").value = v;
    } else if (k === "min" && !isNaN(parseFloat(v))) {
      state.min = parseFloat(v);
      document.getElementById("minscore").value = v;
    }
  });

  render();
  document.documentElement.setAttribute("data-report-ready", "1");
})();
"""
