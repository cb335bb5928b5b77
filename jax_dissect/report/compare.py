"""The page of a comparison of runs: compare.html beside its files.

One self-contained HTML file (inline CSS and JS, charts as data URIs) built
from the directory `jax-dissect compare` wrote: its manifest
(comparison.json: runs, layers, notes, files with captions), the charts and
the CSV tables. Tables sort by a click on a column title; long tables show
their first `max_rows` rows and name the CSV that has all of them. Each
run's own report is linked when it exists (<run>/report.html).
"""

from __future__ import annotations

import base64
import csv
import datetime
import html
import json
import os
from typing import Any

from jax_dissect.store import files

PAGE = "compare.html"
MANIFEST = "comparison.json"

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
.note{background:#fff6d5;border-left:4px solid #e0b000;padding:.4em .8em;
margin:.3em 0}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#f0f0f0;cursor:pointer;position:sticky;top:0}
td.t{text-align:left}img{max-width:100%;border:1px solid #ddd}
.charts{display:flex;flex-wrap:wrap;gap:1em}.charts figure{margin:0}
figcaption{font-weight:600;margin:.3em 0}
.cap{color:#555;font-size:.9em}
"""

_JS = """
document.querySelectorAll('table.sort').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var rows=Array.from(t.tBodies[0].rows),d=th.dataset.d==='1'?-1:1;
      th.dataset.d=d===1?'1':'0';
      rows.sort(function(a,b){
        var x=a.cells[i].textContent,y=b.cells[i].textContent,
            fx=parseFloat(x),fy=parseFloat(y);
        if(!isNaN(fx)&&!isNaN(fy))return d*(fx-fy);
        return d*x.localeCompare(y);});
      rows.forEach(function(r){t.tBodies[0].appendChild(r);});});});});
document.documentElement.setAttribute('data-compare-ready','1');
"""


def _cell(value: str) -> str:
  try:
    x = float(value)
  except ValueError:
    return f'<td class="t">{html.escape(value)}</td>'
  text = value if x == int(x) and "." not in value else f"{x:.4g}"
  return f"<td>{html.escape(text)}</td>"


def _table(path: str, max_rows: int) -> str:
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    return "<p>(empty)</p>"
  head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
  body = "".join("<tr>" + "".join(_cell(v) for v in r) + "</tr>"
                 for r in rows[1:max_rows + 1])
  more = ""
  if len(rows) - 1 > max_rows:
    more = (f'<p class="cap">first {max_rows} of {len(rows) - 1} rows; all '
            f"in {html.escape(os.path.basename(path))}</p>")
  return (f'<table class="sort"><thead><tr>{head}</tr></thead>'
          f"<tbody>{body}</tbody></table>{more}")


def _png(path: str) -> str:
  with open(path, "rb") as f:
    return "data:image/png;base64," + base64.b64encode(f.read()).decode()


def build_compare_page(out_dir: str, *, run_dirs: list[str] | None = None,
                       title: str | None = None, max_rows: int = 200,
                       out_path: str | None = None) -> str:
  """Writes compare.html for the comparison in `out_dir`.

  Args:
    out_dir: the directory with comparison.json and its files.
    run_dirs: the runs' directories (in the manifest's order), to link
      their reports.
    title: the page title.
    max_rows: rows shown per table.
    out_path: the HTML file (default <out_dir>/compare.html).

  Returns:
    The page's path.
  """
  manifest_path = os.path.join(out_dir, MANIFEST)
  try:
    with open(manifest_path, encoding="utf-8") as f:
      manifest: dict[str, Any] = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ValueError(f"{manifest_path} is missing or damaged ({e}); run "
                     "jax-dissect compare first") from e
  runs = manifest.get("runs", [])
  title = title or "jax_dissect comparison: " + " vs ".join(runs)
  parts = [f"<h1>{html.escape(title)}</h1>",
           '<p class="cap">generated ' + datetime.datetime.now(
               datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
           + "</p>", "<h2>Runs (in order)</h2><ol>"]
  for i, name in enumerate(runs):
    link = ""
    if run_dirs and i < len(run_dirs):
      report = os.path.join(run_dirs[i], "report.html")
      if os.path.exists(report):
        rel = os.path.relpath(report, os.path.dirname(
            os.path.abspath(out_path or manifest_path)))
        link = f' (<a href="{html.escape(rel)}">report</a>)'
    parts.append(f"<li>{html.escape(name)}{link}</li>")
  parts.append("</ol><p>Layers: "
               + html.escape(", ".join(manifest.get("layers", []))) + "</p>")
  for note in manifest.get("notes", []):
    parts.append(f'<div class="note">{html.escape(note)}</div>')
  outputs = manifest.get("outputs", [])
  parts.append('<h2>Charts</h2><div class="charts">')
  for entry in outputs:
    path = os.path.join(out_dir, entry["file"])
    if entry["kind"] != "chart" or not os.path.exists(path):
      continue
    parts.append("<figure><figcaption>"
                 f"{html.escape(entry.get('caption') or entry['file'])}"
                 f'</figcaption><img alt="{html.escape(entry["file"])}" '
                 f'src="{_png(path)}"></figure>')
  parts.append("</div>")
  for entry in outputs:
    path = os.path.join(out_dir, entry["file"])
    if entry["kind"] != "table" or not os.path.exists(path):
      continue
    parts.append(f"<h2>{html.escape(entry.get('caption') or entry['file'])}"
                 f' <span class="cap">({html.escape(entry["file"])})</span>'
                 f"</h2>{_table(path, max_rows)}")
  page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
          f"<body>{''.join(parts)}<script>{_JS}</script></body></html>\n")
  return files.write_text(out_path or os.path.join(out_dir, PAGE), page)
