"""A self-contained static HTML report of a results directory.

One file with inline CSS and JS that opens from disk with no server and no
network (docs/report.md shows it):

- a tab per layer: a sortable, filterable, paged table of its neurons
  (unit, label, thumbnails of the top images, similarity, alternatives,
  then the columns of every per-neuron table an analysis wrote, each
  title unique); a click on a neuron opens its page: large top images
  (with Describe-and-Dissect's crops where it ran), alternatives, and
  every analysis' values and records for that neuron;
- a tab per basis of per-unit tables whose units are not the run's
  neurons (results.Table.basis, e.g. "sae:layer4"), shown the same way;
- Charts (every chart), Tables (the other tables) and Analyses (each
  manifest: the options it ran with, when, and earlier option sets).

Analyses are found through their manifests, so a new analysis needs no
change here. The URL hash sets the view: #tab=layer4&sort=-similarity
&filter=dog&min=0.16, #tab=layer4&unit=17 (a neuron's page); the 0.2 form
#layer=layer4 still works.

Images come from report.thumbnails (the run's probe set by default);
each distinct image is embedded once as a JPEG data URI.
"""

from __future__ import annotations

import base64
import collections
from collections.abc import Sequence
import datetime
import html
import importlib.resources
import io
import json
import os
from typing import Any

from absl import logging
from PIL import Image

from jax_dissect.report import thumbnails as thumbs_lib
from jax_dissect.runtime import progress as progress_lib
from jax_dissect.store import files
from jax_dissect.store import results as results_lib

ImageLoader = thumbs_lib.ImageLoader

# Titles of the neuron tables' own columns (analysis columns never reuse
# them).
BASE_TITLES = ("unit", "label", "top images", "similarity", "alternatives")
# Documents larger than this are not read for the neuron pages.
_MAX_DOCUMENT_BYTES = 64 * 2**20
# Describe-and-Dissect squares each image to this side by default; its crop
# boxes are in those pixels (its `image_size` option).
_DND_IMAGE_SIZE = 375


def thumbnail_data_uri(image: Image.Image, size: int = 128,
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
  return x if x == x and x not in (float("inf"), float("-inf")) else None


def _value(v: Any) -> Any:
  """A CSV cell for the page: a number if it reads as one, else the text."""
  if v is None or v in ("", "nan", "NaN", "None"):
    return None
  x = _maybe_float(v)
  if x is not None and not isinstance(v, bool):
    return int(x) if isinstance(v, str) and v.strip().lstrip("-").isdigit() \
        else x
  return v


def _image_list(v: Any) -> list[str]:
  """A `top_images` cell: a JSON list, or ids separated by ';' or '|'."""
  if isinstance(v, (list, tuple)):
    return [str(x) for x in v]
  if not isinstance(v, str) or not v.strip():
    return []
  text = v.strip()
  if text.startswith("["):
    try:
      return [str(x) for x in json.loads(text)]
    except json.JSONDecodeError:
      pass
  sep = ";" if ";" in text else "|" if "|" in text else None
  return [p.strip() for p in (text.split(sep) if sep else [text])
          if p.strip()]


class _Titles:
  """Unique column titles: a column's own name, or its analysis (then its
  file) before it where another column has the same."""

  def __init__(self, taken: Sequence[str] = BASE_TITLES):
    self.taken = set(taken)

  def assign(self, columns: list[dict[str, Any]]) -> None:
    """Titles the columns: those shown in the table first (they keep their
    own names where they can), then those only on a neuron's page."""
    shown = [c for c in columns if c.get("shown", True)]
    self._assign(shown)
    self._assign([c for c in columns if not c.get("shown", True)])

  def _assign(self, columns: list[dict[str, Any]]) -> None:
    counts = collections.Counter(c["name"] for c in columns)
    for c in columns:
      options = [c["name"], f"{c['analysis']} {c['name']}",
                 f"{c['stem']} {c['name']}"]
      if counts[c["name"]] > 1:
        options = options[1:]
      title = next((t for t in options if t not in self.taken), None)
      n = 2
      while title is None:
        title = f"{options[-1]} ({n})"
        title = None if title in self.taken else title
        n += 1
      self.taken.add(title)
      c["title"] = title


def _neuron_columns(entries: Sequence[results_lib.OutputEntry]
                    ) -> tuple[list[dict[str, Any]],
                               dict[tuple[str, int], dict[str, Any]]]:
  """Columns of the per-neuron analysis tables, and their values.

  Returns:
    ([{key, title, name, num, analysis, stem, shown}], {(layer, unit):
    {key: value}}); `shown`: in the layer table (the table's
    neuron_columns), else only on the neuron page.
  """
  columns: list[dict[str, Any]] = []
  values: dict[tuple[str, int], dict[str, Any]] = {}
  for e in entries:
    if e.kind != "table" or not e.per_neuron or e.basis:
      continue  # Units of another basis are not the run's neurons.
    rows = results_lib.read_table(e.path)
    if not rows or "layer" not in rows[0] or "unit" not in rows[0]:
      logging.warning("report: %s is not a per-neuron table; skipped", e.path)
      continue
    names = [c for c in rows[0] if c not in ("layer", "unit")]
    shown = set(e.neuron_columns or names)
    stem = os.path.splitext(e.file)[0]
    for c in names:
      numeric = all(_maybe_float(r[c]) is not None or r[c] in ("", "nan")
                    for r in rows)
      columns.append({"key": f"{stem}.{c}", "name": c, "num": numeric,
                      "analysis": e.analysis, "stem": stem,
                      "shown": c in shown})
    for r in rows:
      try:
        where = (r["layer"], int(r["unit"]))
      except ValueError:
        continue
      cell = values.setdefault(where, {})
      for c in names:
        cell[f"{stem}.{c}"] = _value(r[c])
  _Titles().assign(columns)
  return columns, values


def _documents(entries: Sequence[results_lib.OutputEntry]
               ) -> dict[str, dict[str, Any]]:
  """Per-neuron records of the analyses' JSON documents (lists of objects
  with layer and unit, e.g. dnd_details.json): {"layer/unit": {analysis:
  record}}."""
  out: dict[str, dict[str, Any]] = {}
  for e in entries:
    if e.kind != "document":
      continue
    try:
      if os.path.getsize(e.path) > _MAX_DOCUMENT_BYTES:
        continue
      with open(e.path, encoding="utf-8") as f:
        doc = json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
    if not isinstance(doc, list):
      continue
    for record in doc:
      if isinstance(record, dict) and "layer" in record and "unit" in record:
        try:
          key = f"{record['layer']}/{int(record['unit'])}"
        except (TypeError, ValueError):
          continue
        out.setdefault(key, {})[e.analysis] = record
  return out


def _basis_views(entries: Sequence[results_lib.OutputEntry]
                 ) -> list[dict[str, Any]]:
  """A view per basis of per-unit tables (Table.basis)."""
  by_basis: dict[str, list[results_lib.OutputEntry]] = {}
  for e in entries:
    if e.kind == "table" and e.basis:
      by_basis.setdefault(e.basis, []).append(e)
  views = []
  for basis, tables in by_basis.items():
    columns: list[dict[str, Any]] = []
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    label = score = None
    for e in tables:
      table = results_lib.read_table(e.path)
      if not table or "unit" not in table[0]:
        logging.warning("report: %s has no unit column; skipped", e.path)
        continue
      stem = os.path.splitext(e.file)[0]
      names = [c for c in table[0] if c not in ("layer", "unit")]
      for c in names:
        if c == "top_images":
          continue
        numeric = all(_maybe_float(r[c]) is not None or r[c] in ("", "nan")
                      for r in table)
        if label is None and c in ("description", "label", "concept"):
          label = f"{stem}.{c}"
          continue
        if score is None and c in ("similarity", "score") and numeric:
          score = f"{stem}.{c}"
          continue
        columns.append({"key": f"{stem}.{c}", "name": c, "num": numeric,
                        "analysis": e.analysis, "stem": stem,
                        "shown": True})
      for r in table:
        try:
          where = (r.get("layer", ""), int(r["unit"]))
        except ValueError:
          continue
        row = rows.setdefault(where, {"layer": where[0], "unit": where[1],
                                      "images": []})
        for c in names:
          if c == "top_images":
            row["images"] = _image_list(r[c])
          else:
            row[f"{stem}.{c}"] = _value(r[c])
    _Titles().assign(columns)
    out_rows = []
    for row in rows.values():
      row["label"] = row.pop(label, None) if label else None
      row["similarity"] = row.pop(score, None) if score else None
      out_rows.append(row)
    out_rows.sort(key=lambda r: (r["layer"], r["unit"]))
    views.append({"id": f"basis:{basis}", "name": basis, "kind": "basis",
                  "layers": sorted({r["layer"] for r in out_rows}),
                  "rows": out_rows, "columns": columns,
                  "analyses": sorted({e.analysis for e in tables})})
  return views


def _runs(analysis_dir: str) -> list[dict[str, Any]]:
  """Each manifest: analysis, instance, options, when, earlier options,
  files."""
  out = []
  for m in results_lib.analysis_manifests(analysis_dir):
    out.append({"analysis": m["analysis"], "instance": m.get("instance", ""),
                "options": m.get("options"), "written": m.get("written"),
                "previous": m.get("previous") or [],
                "files": [o.get("file") for o in m.get("outputs") or []
                          if isinstance(o, dict)]})
  return out


class _Thumbs:
  """Embedded images: each distinct id once."""

  def __init__(self, loader: ImageLoader, size: int):
    self.loader, self.size = loader, size
    self.uris: dict[str, str | None] = {}
    self._wanted: dict[str, None] = {}

  def add(self, ids: Sequence[str]) -> None:
    """Asks for `ids` (loaded by `load`)."""
    self._wanted.update(dict.fromkeys(ids))

  def load(self) -> None:
    """Loads and shrinks every image asked for, with a progress count."""
    todo = [i for i in self._wanted if i not in self.uris]
    count = progress_lib.Progress("report images", len(todo))
    for image_id in todo:
      img = self.loader(image_id)
      self.uris[image_id] = (thumbnail_data_uri(img, self.size)
                             if img is not None else None)
      count.update(1)
    count.update(0, final=True)


def collect_report_data(results: results_lib.Run, *,
                        analysis_dir: str | None = None,
                        image_root: str | None = None,
                        image_loader: ImageLoader | None = None,
                        num_thumbs: int = 5, page_thumbs: int = 10,
                        thumb_size: int = 128,
                        layers: Sequence[str] | None = None,
                        title: str | None = None) -> dict[str, Any]:
  """Gathers everything the page shows into one JSON-serialisable dict.

  Args:
    results: the run.
    analysis_dir: the analyses' outputs (default <run>/analysis).
    image_root: read image ids as files under it (default: the run's own
      probe images, report.thumbnails).
    image_loader: id -> PIL image or None, instead of either.
    num_thumbs: top images in the tables (0: none).
    page_thumbs: top images on a neuron's page (at most what the run
      kept).
    thumb_size: largest side of the embedded images, in pixels.
    layers: the layers shown (default all).
    title: the page's title.

  Returns:
    {"title", "generated", "meta", "views", "charts", "tables", "runs",
    "details", "thumbs", "num_thumbs"}.
  """
  if num_thumbs < 0 or page_thumbs < 0 or thumb_size < 8:
    raise ValueError(f"num_thumbs and page_thumbs must be >= 0 and "
                     f"thumb_size >= 8; got {num_thumbs}, {page_thumbs}, "
                     f"{thumb_size}")
  analysis_dir = results.analysis_dir(analysis_dir)
  layers = [results.check_layer(l) for l in (layers or results.layers)]
  entries = results_lib.analysis_outputs(analysis_dir)
  columns, extra = _neuron_columns(entries)
  loader = image_loader or thumbs_lib.report_loader(results, image_root,
                                                    thumb_size)
  thumbs = _Thumbs(loader, thumb_size)
  shown = max(num_thumbs, page_thumbs)
  views = []
  for layer in layers:
    rows = []
    for n in results.layer_neurons(layer):
      images = list(n.top_images)[:shown]
      rows.append({"unit": n.unit, "label": n.description,
                   "similarity": n.similarity,
                   "alternatives": [[c, v] for c, v in n.alternatives],
                   "images": images, **extra.get((layer, n.unit), {})})
    views.append({"id": layer, "name": layer, "kind": "layer",
                  "layers": [layer], "rows": rows, "columns": columns})
  views += _basis_views(entries)
  details = _documents(entries)
  if shown:
    for view in views:
      for row in view["rows"]:
        row["images"] = row["images"][:shown]
        thumbs.add(row["images"])
    for records in details.values():
      for record in records.values():
        tops = record.get("top_images")
        if isinstance(tops, list):
          thumbs.add([t["image"] for t in tops[:page_thumbs]
                      if isinstance(t, dict) and "image" in t])
  thumbs.load()
  missing = [k for k, v in thumbs.uris.items() if v is None]
  if missing:
    logging.warning("report: %d of %d images not found or unreadable (e.g. "
                    "%r); pass --image_root", len(missing), len(thumbs.uris),
                    missing[0])
  charts, tables = [], []
  for e in entries:
    if e.kind == "chart":
      charts.append({"title": e.caption or e.file, "analysis": e.analysis,
                     "file": e.file, "src": _png_data_uri(e.path)})
    elif e.kind == "table" and e.show and not e.per_neuron and not e.basis:
      rows = results_lib.read_table(e.path)
      if rows:
        tables.append({"title": e.caption or e.file, "analysis": e.analysis,
                       "file": e.file, "columns": list(rows[0]),
                       "rows": [[_value(v) for v in r.values()]
                                for r in rows]})
  runs = _runs(analysis_dir)
  for run in runs:  # DnD's crop boxes are in its squared images' pixels.
    if run["analysis"] == "dnd" and isinstance(run["options"], dict):
      run["image_size"] = run["options"].get("image_size", _DND_IMAGE_SIZE)
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
      "meta": meta, "views": views, "charts": charts, "tables": tables,
      "runs": runs, "details": details, "thumbs": thumbs.uris,
      "num_thumbs": num_thumbs, "page_thumbs": page_thumbs,
      "similarity_fn": results.similarity_fn,
  }


def _finite(x: Any) -> Any:
  """`x` with NaN and infinities as None (JSON has neither)."""
  if isinstance(x, float):
    return x if x == x and abs(x) != float("inf") else None
  if isinstance(x, dict):
    return {k: _finite(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_finite(v) for v in x]
  return x


def _json_for_script(data: Any) -> str:
  """JSON safe inside <script>: no '</' or HTML comment openers."""
  return (json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=True,
                     allow_nan=False, default=str)
          .replace("</", "<\\/").replace("<!--", "<\\!--"))


def _asset(name: str) -> str:
  """A file of the page (template.html, report.css, report.js), package data
  of jax_dissect.report."""
  return (importlib.resources.files(__package__) / name).read_text(
      encoding="utf-8")


def render_html(data: dict[str, Any]) -> str:
  """The report page for `data` from collect_report_data."""
  return (_asset("template.html").replace("%%TITLE%%",
                                          html.escape(data["title"]))
          .replace("%%CSS%%", _asset("report.css"))
          .replace("%%JS%%", _asset("report.js"))
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
      page_thumbs (10), thumb_size (default 128 px), layers, title.

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
