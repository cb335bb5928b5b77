"""The one owner of a run's results directory (docs/results_format.md).

describe_neurons writes a run with `write_run`; every analysis, the report
and the user's own code read it with `load_run`, which returns a `Run`: the
labelled neurons (`Neuron` records), the concept list, the probe image ids,
the run's configuration and lazy access to the cached arrays A (N, K) per
layer and P (N, M) behind the labels. Analyses return an `AnalysisOutput`
(tables, charts, JSON documents) that `write_analysis` saves under
`<run>/analysis/`, together with a manifest of what each file is; the HTML
report walks those manifests, so a new analysis needs no report change.

Every file is written atomically (jax_dissect.store.files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import csv
import dataclasses
import datetime
import json
import os
from typing import Any

import numpy as np

from jax_dissect import similarity as sim_lib
from jax_dissect.store import files
from jax_dissect.store import integrity

DESCRIPTIONS_CSV = "descriptions.csv"
NEURONS_JSONL = "neurons.jsonl"
CONFIG_JSON = "config.json"
CONCEPTS_TXT = "concepts.txt"
IMAGE_IDS_TXT = "image_ids.txt"
ARRAYS_JSON = "arrays.json"
SKIPPED_TXT = "skipped_images.txt"
ANALYSIS_DIR = "analysis"
# Written by write_analysis beside an analysis' files: what each file is.
MANIFEST_SUFFIX = ".outputs.json"
# The reference implementation's columns of descriptions.csv.
DESCRIPTION_COLUMNS = ("layer", "unit", "description", "similarity")
# How many next-best concepts and top images a run keeps per neuron.
TOP_ALTERNATIVES = 5
TOP_IMAGES = 10


# ----------------------------------------------------------------------------
# Neurons.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Neuron:
  """The description of one neuron.

  Attributes:
    layer: the layer's dotted path (e.g. "layer4").
    unit: the neuron's index (column of the layer's activations).
    description: the best concept.
    similarity: its value of the run's similarity function.
    alternatives: the next best (concept, similarity) pairs, best first.
    top_images: ids of the most activating probe images, most first.
  """
  layer: str
  unit: int
  description: str
  similarity: float
  alternatives: tuple[tuple[str, float], ...] = ()
  top_images: tuple[str, ...] = ()

  def to_json(self) -> dict[str, Any]:
    """The neurons.jsonl object of this neuron."""
    return {"layer": self.layer, "unit": self.unit,
            "description": self.description, "similarity": self.similarity,
            "alternatives": [{"concept": c, "similarity": s}
                             for c, s in self.alternatives],
            "top_images": list(self.top_images)}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> "Neuron":
    return cls(layer=str(obj["layer"]), unit=int(obj["unit"]),
               description=str(obj["description"]),
               similarity=float(obj["similarity"]),
               alternatives=tuple((str(a["concept"]), float(a["similarity"]))
                                  for a in obj.get("alternatives") or ()),
               top_images=tuple(str(i) for i in obj.get("top_images") or ()))


def describe(similarity: Any, concepts: Sequence[str], *, layer: str = "",
             top_n: int = TOP_ALTERNATIVES,
             top_images: Sequence[Sequence[str]] | None = None
             ) -> list[Neuron]:
  """Labels each neuron with its best concept and the next `top_n`.

  Args:
    similarity: S, (K, M) from a kernel.
    concepts: the M concept strings, in column order.
    layer: the layer name the neurons get.
    top_n: how many alternatives after the best to keep.
    top_images: per neuron, the ids of its most activating images.

  Returns:
    K Neurons, in unit order.
  """
  if not isinstance(top_n, (int, np.integer)) or top_n < 0:
    raise ValueError(f"top_n must be a non-negative int; got {top_n!r}")
  shape = np.shape(similarity)
  if len(shape) == 2 and shape[1] != len(concepts):
    raise ValueError(f"similarity has {shape[1]} concept columns but "
                     f"{len(concepts)} concepts were given")
  vals, idx = sim_lib.top_concepts(similarity, int(top_n) + 1)
  if top_images is not None and len(top_images) != vals.shape[0]:
    raise ValueError(f"top_images has {len(top_images)} rows for "
                     f"{vals.shape[0]} neurons")
  return [
      Neuron(layer=layer, unit=k, description=concepts[idx[k, 0]],
             similarity=float(vals[k, 0]),
             alternatives=tuple((concepts[i], float(v))
                                for i, v in zip(idx[k, 1:], vals[k, 1:])),
             top_images=tuple(top_images[k]) if top_images is not None
             else ())
      for k in range(vals.shape[0])
  ]


# ----------------------------------------------------------------------------
# A run on disk.
# ----------------------------------------------------------------------------


def _lines(items: Iterable[str]) -> str:
  return "".join(f"{s}\n" for s in items)


def write_run(result_dir: str | os.PathLike, *, neurons: Sequence[Neuron],
              concepts: Sequence[str], image_ids: Sequence[str],
              config: Mapping[str, Any], arrays: Mapping[str, Any],
              skipped_images: Sequence[str] = ()) -> str:
  """Writes a run's results directory (every file atomically).

  Args:
    result_dir: the directory (created if needed).
    neurons: the labelled neurons, in layer then unit order.
    concepts: the concept set (column m of P is concepts[m]).
    image_ids: the probe image ids (row i of A and P is image_ids[i]).
    config: the run's options, versions, devices and timings.
    arrays: {"concept_activations": path, "activations": {layer: path},
      "image_embeddings": path, "text_embeddings": path} of the cached
      arrays behind the labels.
    skipped_images: ids of unreadable probe images.

  Returns:
    The directory.
  """
  result_dir = os.fspath(result_dir)
  join = lambda name: os.path.join(result_dir, name)
  files.write_csv(join(DESCRIPTIONS_CSV), (
      {"layer": n.layer, "unit": n.unit, "description": n.description,
       "similarity": f"{n.similarity:.6g}"} for n in neurons),
                  DESCRIPTION_COLUMNS)
  files.write_text(join(NEURONS_JSONL),
                   _lines(json.dumps(n.to_json()) for n in neurons))
  files.write_text(join(CONCEPTS_TXT), _lines(concepts))
  files.write_text(join(IMAGE_IDS_TXT), _lines(image_ids))
  files.write_text(join(ARRAYS_JSON), json.dumps(arrays, indent=1))
  files.write_text(join(CONFIG_JSON),
                   json.dumps(config, indent=1, default=str))
  if skipped_images:
    files.write_text(join(SKIPPED_TXT), _lines(skipped_images))
  elif os.path.exists(join(SKIPPED_TXT)):
    os.remove(join(SKIPPED_TXT))
  return result_dir


def _read_lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\r\n") for line in f]


def _read_neurons_jsonl(path: str) -> list[Neuron]:
  neurons = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        neurons.append(Neuron.from_json(json.loads(line)))
      except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}:{lineno}: not a neuron record: {e}") from e
  return neurons


def _read_descriptions_csv(path: str) -> list[Neuron]:
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    missing = set(DESCRIPTION_COLUMNS) - set(reader.fieldnames or ())
    if missing:
      raise ValueError(f"{path} lacks columns {sorted(missing)}; it must have "
                       f"{','.join(DESCRIPTION_COLUMNS)}")
    try:
      return [Neuron(layer=r["layer"], unit=int(r["unit"]),
                     description=r["description"],
                     similarity=float(r["similarity"])) for r in reader]
    except ValueError as e:
      raise ValueError(f"{path}: bad row: {e}") from e


@dataclasses.dataclass
class Run:
  """A loaded results directory.

  Attributes:
    path: the results directory.
    neurons: the labelled neurons, in file order (neurons.jsonl; from
      descriptions.csv, without alternatives and top images, if absent).
    config: config.json as a dict ({} if absent).
    concepts: the concept set; column m of P is concepts[m] ([] if absent).
    image_ids: probe image ids; row i of A and P is image_ids[i].
    arrays: arrays.json as a dict ({} if absent).
    skipped_images: ids of probe images the run could not read.
  """
  path: str
  neurons: list[Neuron]
  config: dict[str, Any]
  concepts: list[str]
  image_ids: list[str]
  arrays: dict[str, Any]
  skipped_images: list[str] = dataclasses.field(default_factory=list)

  @property
  def layers(self) -> list[str]:
    """Layer names in the order they first appear."""
    return list(dict.fromkeys(n.layer for n in self.neurons))

  @property
  def similarity_fn(self) -> str:
    """Name of the similarity function behind the labels."""
    return self.config.get("similarity_fn", "soft_wpmi")

  @property
  def similarity_kwargs(self) -> dict[str, Any]:
    """Hyper-parameters the run passed to its similarity function."""
    return dict(self.config.get("similarity_kwargs") or {})

  @property
  def seed(self) -> int:
    """The run's seed (rank_reorder's key is jax.random.key(seed))."""
    return int(self.config.get("seed", 0))

  def kernel_kwargs(self, name: str | None = None,
                    overrides: Mapping[str, Any] | None = None
                    ) -> dict[str, Any]:
    """Hyper-parameters to re-run kernel `name` (default the run's) with.

    The run's own hyper-parameters apply to the run's function, the
    kernel's defaults to any other; `overrides` go on top.
    """
    name = name or self.similarity_fn
    kwargs = self.similarity_kwargs if name == self.similarity_fn else {}
    kwargs.update(overrides or {})
    kwargs.pop("key", None)
    return kwargs

  def check_layer(self, layer: str) -> str:
    """Returns `layer` or raises a ValueError listing the run's layers."""
    if layer not in self.layers:
      raise ValueError(f"layer {layer!r} is not in the results at "
                       f"{self.path}; layers: {', '.join(self.layers)}")
    return layer

  def layer_neurons(self, layer: str) -> list[Neuron]:
    """The neurons of `layer`, sorted by unit."""
    self.check_layer(layer)
    return sorted((n for n in self.neurons if n.layer == layer),
                  key=lambda n: n.unit)

  def _array_path(self, *keys: str) -> str:
    value: Any = self.arrays
    for key in keys:
      if not isinstance(value, dict) or key not in value:
        raise ValueError(
            f"{os.path.join(self.path, ARRAYS_JSON)} has no entry "
            f"{'/'.join(keys)!r}; cached arrays are needed to re-run kernels")
      value = value[key]
    path = os.path.join(self.path, value)  # Absolute paths stay as they are.
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"cached array {'/'.join(keys)} not found at {path} (from "
          f"{os.path.join(self.path, ARRAYS_JSON)}); re-run describe_neurons")
    return path

  def _load(self, *keys: str) -> np.ndarray:
    """A cached array, checked (size, header, checksum) before it is used."""
    path = self._array_path(*keys)
    try:
      return integrity.load_verified(path)
    except integrity.DamagedEntryError:
      raise
    except (ValueError, OSError) as e:
      raise ValueError(f"cannot read cached array {path}: {e}") from e

  def activations(self, layer: str) -> np.ndarray:
    """A of `layer`: float32 (N, K), memory-mapped."""
    if layer not in self.arrays.get("activations", {}):
      self.check_layer(layer)
    return self._load("activations", layer)

  def concept_activations(self) -> np.ndarray:
    """P: (N, M), memory-mapped."""
    return self._load("concept_activations")

  def image_embeddings(self) -> np.ndarray:
    """CLIP image embeddings of the probe set: (N, D), L2-normalised rows."""
    return self._load("image_embeddings")

  def text_embeddings(self) -> np.ndarray:
    """CLIP text embeddings of the concept set: (M, D), L2-normalised rows."""
    return self._load("text_embeddings")

  def cache_dir(self) -> str:
    """The cache directory the run's activations are in (its activation_dir,
    found from arrays.json, so the directory the run was started from does
    not matter)."""
    paths = self.arrays.get("activations") or {}
    if not paths:
      raise ValueError(f"{os.path.join(self.path, ARRAYS_JSON)} lists no "
                       "cached activations; re-run describe_neurons")
    layer = next(iter(paths))
    # <cache>/activations/<key>.npy
    return os.path.dirname(os.path.dirname(self._array_path("activations",
                                                            layer)))

  def analysis_dir(self, out_dir: str | None = None) -> str:
    """The analyses' output directory: out_dir or <run>/analysis."""
    return out_dir or os.path.join(self.path, ANALYSIS_DIR)


def load_run(path: str | os.PathLike) -> Run:
  """Loads the results directory written by describe_neurons.

  Args:
    path: the directory (see docs/results_format.md).

  Returns:
    A `Run`; the cached arrays are loaded lazily by its methods.

  Raises:
    FileNotFoundError: if `path` is not a directory or holds neither
      neurons.jsonl nor descriptions.csv.
    ValueError: if a file is malformed.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"results directory {path!r} does not exist")
  join = lambda name: os.path.join(path, name)
  if os.path.exists(join(NEURONS_JSONL)):
    neurons = _read_neurons_jsonl(join(NEURONS_JSONL))
  elif os.path.exists(join(DESCRIPTIONS_CSV)):
    neurons = _read_descriptions_csv(join(DESCRIPTIONS_CSV))
  else:
    raise FileNotFoundError(
        f"{path} holds neither {NEURONS_JSONL} nor {DESCRIPTIONS_CSV}: not a "
        "describe_neurons results directory")

  def optional_json(name):
    if not os.path.exists(join(name)):
      return {}
    try:
      with open(join(name), encoding="utf-8") as f:
        return json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"{join(name)} is not valid JSON: {e}") from e

  def optional_lines(name):
    return _read_lines(join(name)) if os.path.exists(join(name)) else []

  return Run(path=path, neurons=neurons, config=optional_json(CONFIG_JSON),
             concepts=optional_lines(CONCEPTS_TXT),
             image_ids=optional_lines(IMAGE_IDS_TXT),
             arrays=optional_json(ARRAYS_JSON),
             skipped_images=optional_lines(SKIPPED_TXT))


# ----------------------------------------------------------------------------
# Analysis outputs.
# ----------------------------------------------------------------------------


@dataclasses.dataclass
class Table:
  """A table an analysis writes as `<name>.csv`.

  Attributes:
    rows: one dict per row; columns are the keys in first-seen order.
    caption: what the table is, shown by the report.
    per_neuron: rows carry `layer` and `unit`: the report joins
      `neuron_columns` into its per-layer neuron tables instead of showing
      the table on its own.
    neuron_columns: the columns the report shows beside each neuron's label
      (per_neuron tables only; default all but layer and unit).
    json: also write the rows as `<name>.json`.
    show: the report shows this table (non-per-neuron tables).
    basis: for per-unit tables whose units are not the run's neurons
      (e.g. "sae:layer4", the features of a sparse autoencoder), the name
      of that basis: rows carry `layer` and `unit` (the unit's index in the
      basis) and the report shows them as a basis of their own, not
      beside the neurons; "" for the run's neurons.
  """
  rows: list[dict[str, Any]]
  caption: str = ""
  per_neuron: bool = False
  neuron_columns: tuple[str, ...] = ()
  json: bool = False
  show: bool = True
  basis: str = ""


@dataclasses.dataclass
class Chart:
  """A PNG chart an analysis writes as `<name>.png`.

  Attributes:
    draw: draw(path) writes the PNG (e.g. with matplotlib's savefig).
    caption: what the chart shows, for the report.
  """
  draw: Callable[[str], Any]
  caption: str = ""


@dataclasses.dataclass
class AnalysisOutput:
  """What an analysis returns; `write_analysis` saves it.

  Attributes:
    analysis: the analysis' name (its registry name).
    tables: file stem -> Table (written as <stem>.csv).
    charts: file stem -> Chart (written as <stem>.png).
    documents: file stem -> JSON-able object (written as <stem>.json).
    summary: lines for the terminal (printed by the scripts).
    instance: tells apart outputs of one analysis run with different
      options that write different files (e.g. the weights of two layer
      pairs); part of the manifest's name.
  """
  analysis: str
  tables: dict[str, Table] = dataclasses.field(default_factory=dict)
  charts: dict[str, Chart] = dataclasses.field(default_factory=dict)
  documents: dict[str, Any] = dataclasses.field(default_factory=dict)
  summary: list[str] = dataclasses.field(default_factory=list)
  instance: str = ""


def json_options(options: Mapping[str, Any]) -> dict[str, Any]:
  """`options` as JSON values (tuples as lists, others as strings)."""
  return json.loads(json.dumps(dict(options), default=str))


def manifest_path(out_dir: str, analysis: str, instance: str = "") -> str:
  """The manifest file of an analysis (and instance) in `out_dir`."""
  stem = analysis + (f"-{instance}" if instance else "")
  return os.path.join(out_dir, stem + MANIFEST_SUFFIX)


def read_manifest(out_dir: str, analysis: str, instance: str = ""
                  ) -> dict[str, Any] | None:
  """The manifest an analysis (and instance) wrote, or None (none, or
  unreadable)."""
  try:
    with open(manifest_path(out_dir, analysis, instance),
              encoding="utf-8") as f:
      manifest = json.load(f)
  except (OSError, json.JSONDecodeError):
    return None
  return manifest if isinstance(manifest, dict) else None


# Earlier option sets a manifest keeps (a rerun with other options).
_PREVIOUS_KEPT = 5


def write_analysis(output: AnalysisOutput, out_dir: str,
                   options: Mapping[str, Any] | None = None
                   ) -> dict[str, str]:
  """Writes an analysis' files and its manifest into `out_dir`.

  Args:
    output: what the analysis returned.
    out_dir: the directory (e.g. run.analysis_dir()).
    options: the options it ran with (its config), recorded in the
      manifest with the time; when they differ from those of the manifest
      it replaces, the earlier ones are kept under "previous" (a rerun
      with other options shows in the report instead of silently
      replacing the outputs).

  Returns:
    {file name: path} of every file written (the manifest last).
  """
  paths: dict[str, str] = {}
  entries = []

  def add(name: str, path: str, kind: str, **extra) -> None:
    paths[name] = path
    entries.append({"file": name, "kind": kind, **extra})

  for stem, table in output.tables.items():
    name = f"{stem}.csv"
    extra = {"basis": table.basis} if table.basis else {}
    add(name, files.write_csv(os.path.join(out_dir, name), table.rows),
        "table", caption=table.caption, per_neuron=table.per_neuron,
        neuron_columns=list(table.neuron_columns), show=table.show, **extra)
    if table.json:
      name = f"{stem}.json"
      add(name, files.write_json(os.path.join(out_dir, name), table.rows,
                                 indent=2), "table_json")
  for stem, doc in output.documents.items():
    name = f"{stem}.json"
    add(name, files.write_json(os.path.join(out_dir, name), doc, indent=2),
        "document")
  for stem, chart in output.charts.items():
    name = f"{stem}.png"
    add(name, files.write_with(os.path.join(out_dir, name), chart.draw),
        "chart", caption=chart.caption)
  manifest = manifest_path(out_dir, output.analysis, output.instance)
  doc: dict[str, Any] = {"analysis": output.analysis, "outputs": entries}
  if output.instance:
    doc["instance"] = output.instance
  if options is not None:
    before = read_manifest(out_dir, output.analysis, output.instance) or {}
    previous = list(before.get("previous") or [])
    options = json_options(options)
    if before.get("options") is not None and before["options"] != options:
      previous.insert(0, {"options": before["options"],
                          "written": before.get("written")})
    doc.update(options=options, written=datetime.datetime.now().astimezone(
        ).isoformat(timespec="seconds"), previous=previous[:_PREVIOUS_KEPT])
  files.write_json(manifest, doc, indent=2)
  paths[os.path.basename(manifest)] = manifest
  return paths


@dataclasses.dataclass(frozen=True)
class OutputEntry:
  """One file of an analysis, as listed in its manifest.

  Attributes:
    analysis: the analysis that wrote it.
    file: the file name (in the analysis directory).
    path: its path.
    kind: "table", "table_json", "document" or "chart".
    caption: what it is.
    per_neuron: a per-neuron table (rows keyed by layer and unit).
    neuron_columns: columns to show beside each neuron's label.
    show: the report shows it.
    basis: the units of a per-unit table that are not the run's neurons
      (Table.basis), or "".
  """
  analysis: str
  file: str
  path: str
  kind: str
  caption: str = ""
  per_neuron: bool = False
  neuron_columns: tuple[str, ...] = ()
  show: bool = True
  basis: str = ""


def analysis_outputs(analysis_dir: str) -> list[OutputEntry]:
  """The files the analyses wrote into `analysis_dir`, by manifest.

  Manifests are read in file-name order; entries whose file is missing are
  left out. Returns [] if the directory does not exist.
  """
  if not os.path.isdir(analysis_dir):
    return []
  out = []
  for name in sorted(os.listdir(analysis_dir)):
    if not name.endswith(MANIFEST_SUFFIX):
      continue
    path = os.path.join(analysis_dir, name)
    try:
      with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
      entries = manifest["outputs"]
      analysis = manifest["analysis"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"analysis manifest {path} is damaged ({e}); delete it "
                       "and re-run its analysis") from e
    for e in entries:
      file_path = os.path.join(analysis_dir, e["file"])
      if os.path.exists(file_path):
        out.append(OutputEntry(
            analysis=analysis, file=e["file"], path=file_path,
            kind=e["kind"], caption=e.get("caption", ""),
            per_neuron=bool(e.get("per_neuron")),
            neuron_columns=tuple(e.get("neuron_columns") or ()),
            show=bool(e.get("show", True)), basis=str(e.get("basis", ""))))
  return out


def analysis_manifests(analysis_dir: str) -> list[dict[str, Any]]:
  """The manifests in `analysis_dir`, in file-name order, each with its
  "file" name added; unreadable ones are left out (analysis_outputs says
  which files they list)."""
  if not os.path.isdir(analysis_dir):
    return []
  out = []
  for name in sorted(os.listdir(analysis_dir)):
    if not name.endswith(MANIFEST_SUFFIX):
      continue
    try:
      with open(os.path.join(analysis_dir, name), encoding="utf-8") as f:
        manifest = json.load(f)
    except (OSError, json.JSONDecodeError):
      continue
    if isinstance(manifest, dict) and "analysis" in manifest:
      out.append({**manifest, "file": name})
  return out


def read_table(path: str) -> list[dict[str, str]]:
  """Reads a CSV table an analysis wrote (values as strings)."""
  with open(path, encoding="utf-8", newline="") as f:
    return list(csv.DictReader(f))
