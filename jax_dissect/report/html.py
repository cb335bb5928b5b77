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
from collections.abc import Callable, Sequence
import datetime
import html
import importlib.resources
import io
import json
import os
from typing import Any

from absl import logging
from PIL import Image

from jax_dissect.store import files
from jax_dissect.store import results as results_lib

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
    if e.kind != "table" or not e.per_neuron or e.basis:
      continue  # Units of another basis are not the run's neurons.
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
    elif e.kind == "table" and e.show and (not e.per_neuron or e.basis):
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
