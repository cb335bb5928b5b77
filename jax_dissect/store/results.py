"""The one owner of a run's results directory (docs/results_format.md).

describe_neurons writes a run with `write_run`; every analysis, the report
and the user's own code read it with `load_run`, which returns a `Run`: the
labelled neurons (`Neuron` records), the concept list, the probe image ids,
the run's configuration and lazy access to the cached arrays A (N, K) per
layer and P (N, M) behind the labels. Analyses return an `AnalysisOutput`
(tables, charts, JSON documents) that `write_analysis` saves under
`<run>/analysis/`, together with a manifest of what each file is; the HTML
report walks those manifests, so a new analysis needs no report change.

A run is written as a unit: its files are written into a temporary sibling
directory with a manifest (`manifest.json`: each file's size and SHA-256,
written last) and the directory replaces the previous one at once
(jax_dissect.store.files.replace_dir), so a run cut short (kill -9, a full
disk) leaves the previous run whole. `load_run` checks the manifest and the
files against each other and refuses a partial or mixed run with one line
naming the file. Paths in arrays.json are trusted only inside the run's
cache directory (or the one the reader names), and each array's shape is
checked against the run's records before it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import csv
import dataclasses
import datetime
import hashlib
import json
import os
from typing import Any

from absl import logging
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
# Written last: each run file's size and SHA-256.
RUN_MANIFEST = "manifest.json"
RUN_FILES = (DESCRIPTIONS_CSV, NEURONS_JSONL, CONFIG_JSON, CONCEPTS_TXT,
             IMAGE_IDS_TXT, ARRAYS_JSON, SKIPPED_TXT)
_MANIFEST_FORMAT = "jax_dissect-run"
ANALYSIS_DIR = "analysis"
# Outputs derived from a run: replaced with it, never carried to the next.
DERIVED = (ANALYSIS_DIR, "report.html")
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
  """Writes a run's results directory as a unit.

  The files go into a temporary sibling directory, the manifest last, and
  that directory replaces `result_dir` at once: a reader sees the previous
  run whole or this one whole, never a mix (files.replace_dir). Entries of
  `result_dir` that are not a run's (the user's files) are kept; the
  previous run's files, its analysis/ and report.html are not.

  Args:
    result_dir: the directory (created if needed).
    neurons: the labelled neurons, in layer then unit order.
    concepts: the concept set (column m of P is concepts[m]).
    image_ids: the probe image ids (row i of A and P is image_ids[i]).
    config: the run's options, versions, devices and timings (finite
      numbers only).
    arrays: {"concept_activations": path, "activations": {layer: path},
      "image_embeddings": path, "text_embeddings": path, "cache_root":
      the cache directory they are in} of the cached arrays behind the
      labels.
    skipped_images: ids of unreadable probe images.

  Returns:
    The directory.

  Raises:
    ValueError: a NaN or inf in `config`.
    OSError: the directory cannot be written (one line naming the file).
  """
  try:
    config_text = json.dumps(config, indent=1, default=str, allow_nan=False)
  except ValueError:
    raise ValueError("the run's config holds NaN or inf (e.g. in "
                     "similarity_kwargs); options must be finite") from None
  texts = {
      DESCRIPTIONS_CSV: files.csv_text((
          {"layer": n.layer, "unit": n.unit, "description": n.description,
           "similarity": f"{n.similarity:.6g}"} for n in neurons),
                                       DESCRIPTION_COLUMNS),
      NEURONS_JSONL: _lines(json.dumps(n.to_json()) for n in neurons),
      CONCEPTS_TXT: _lines(concepts),
      IMAGE_IDS_TXT: _lines(image_ids),
      ARRAYS_JSON: json.dumps(arrays, indent=1),
      CONFIG_JSON: config_text,
  }
  if skipped_images:
    texts[SKIPPED_TXT] = _lines(skipped_images)
  with files.replace_dir(result_dir, _carried) as tmp:
    manifest = {}
    for name, text in texts.items():
      data = text.encode("utf-8")
      files.write_bytes(os.path.join(tmp, name), data)
      manifest[name] = {"size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()}
    files.write_json(os.path.join(tmp, RUN_MANIFEST),
                     {"format": _MANIFEST_FORMAT, "version": 1,
                      "files": manifest})
  return os.fspath(result_dir)


def _carried(name: str) -> bool:
  """Entries of a run directory kept when a new run replaces it."""
  return name not in RUN_FILES + DERIVED + (RUN_MANIFEST,)


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
    cache_root: the only directory arrays are read from (None: the
      directory arrays.json records, see `load_run`).
  """
  path: str
  neurons: list[Neuron]
  config: dict[str, Any]
  concepts: list[str]
  image_ids: list[str]
  arrays: dict[str, Any]
  skipped_images: list[str] = dataclasses.field(default_factory=list)
  cache_root: str | None = None

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

  def label_indices(self, layer: str, num_neurons: int) -> np.ndarray:
    """(K,) int64 index in `concepts` of each unit's label in `layer`.

    Args:
      layer: a layer of the run.
      num_neurons: K, the number of neurons of its activations.

    Raises:
      ValueError: the labelled units are not 0..K-1, or a label is not in
        concepts.txt.
    """
    index: dict[str, int] = {}
    for i, c in enumerate(self.concepts):
      index.setdefault(c, i)
    neurons = self.layer_neurons(layer)
    if [n.unit for n in neurons] != list(range(num_neurons)):
      raise ValueError(f"layer {layer!r} has labels for {len(neurons)} "
                       f"units but its cached activations have {num_neurons} "
                       "neurons; re-run describe_neurons")
    missing = [n.description for n in neurons if n.description not in index]
    if missing:
      raise ValueError(f"label {missing[0]!r} of layer {layer!r} is not in "
                       "the run's concepts.txt")
    return np.asarray([index[n.description] for n in neurons], np.int64)

  def recorded_cache_root(self) -> str | None:
    """The cache directory the run's arrays were written to: arrays.json's
    cache_root, else (runs before it was recorded) the directory of the
    activations' kinds (<cache>/activations/<key>.npy), or None."""
    root = self.arrays.get("cache_root")
    if isinstance(root, str) and root:
      return os.path.join(self.path, root)
    paths = self.arrays.get("activations") or {}
    if isinstance(paths, dict) and paths:
      first = next(iter(paths.values()))
      if isinstance(first, str):
        return os.path.dirname(os.path.dirname(os.path.join(self.path,
                                                            first)))
    return None

  def _array_path(self, *keys: str) -> str:
    """The path of an array arrays.json names, inside the trusted cache.

    Paths are trusted only inside `cache_root` (default: the recorded
    one); with a `cache_root` other than the recorded one (a moved or
    copied cache) the recorded paths are taken relative to it.
    """
    value: Any = self.arrays
    for key in keys:
      if not isinstance(value, dict) or key not in value:
        raise ValueError(
            f"{os.path.join(self.path, ARRAYS_JSON)} has no entry "
            f"{'/'.join(keys)!r}; cached arrays are needed to re-run kernels")
      value = value[key]
    name = "/".join(keys)
    if not isinstance(value, str) or not value:
      raise ValueError(f"{ARRAYS_JSON} of {self.path}: {name} is not a path")
    path = os.path.join(self.path, value)  # Absolute paths stay as they are.
    recorded = self.recorded_cache_root()
    root = self.cache_root or recorded
    if root is None:
      raise ValueError(f"{ARRAYS_JSON} of {self.path} records no cache "
                       "directory; pass the cache (activation_dir) to read "
                       "its arrays")
    if self.cache_root and recorded and _inside(path, recorded):
      path = os.path.join(self.cache_root, os.path.relpath(
          os.path.realpath(path), os.path.realpath(recorded)))
    if not _inside(path, root):
      raise ValueError(_short(
          f"{ARRAYS_JSON}: {name} is outside the cache {root} ({value}); "
          "arrays are read only from the run's cache, or from the one given "
          "as activation_dir"))
    if not os.path.exists(path):
      raise FileNotFoundError(_short(
          f"cached array {name} not found at {path} (from {ARRAYS_JSON}); "
          "re-run describe_neurons or pass the cache as activation_dir"))
    return path

  def _load(self, *keys: str, shape: tuple[int | None, ...] = ()
            ) -> np.ndarray:
    """A cached array, checked (size, header, checksum, and its shape
    against the run's records: None is any size) before it is used."""
    path = self._array_path(*keys)
    try:
      array = integrity.load_verified(path)
    except integrity.DamagedEntryError:
      raise
    except (ValueError, OSError) as e:
      raise ValueError(_short(f"cannot read cached array {path}: {e}")) from e
    want = tuple(shape)
    if want and (array.ndim != len(want) or any(
        w is not None and w != a for w, a in zip(want, array.shape))):
      expected = "(" + ", ".join("?" if w is None else str(w)
                                 for w in want) + ")"
      raise ValueError(_short(
          f"{ARRAYS_JSON}: {'/'.join(keys)} has shape {array.shape}, but "
          f"the run's records need {expected}: not this run's array "
          f"({path})"))
    return array

  def _num_images(self) -> int | None:
    return len(self.image_ids) or None

  def activations(self, layer: str) -> np.ndarray:
    """A of `layer`: float32 (N, K), memory-mapped.

    Refused when its shape is not (images, the layer's neurons) or its
    cache entry was written for another layer.
    """
    if layer not in self.arrays.get("activations", {}):
      self.check_layer(layer)
    units = sum(1 for n in self.neurons if n.layer == layer) or None
    array = self._load("activations", layer,
                       shape=(self._num_images(), units))
    _check_entry_layer(self._array_path("activations", layer), layer)
    return array

  def concept_activations(self) -> np.ndarray:
    """P: (N, M), memory-mapped."""
    return self._load("concept_activations", shape=(
        self._num_images(), len(self.concepts) or None))

  def image_embeddings(self) -> np.ndarray:
    """CLIP image embeddings of the probe set: (N, D), L2-normalised rows."""
    return self._load("image_embeddings", shape=(self._num_images(), None))

  def text_embeddings(self) -> np.ndarray:
    """CLIP text embeddings of the concept set: (M, D), L2-normalised rows."""
    return self._load("text_embeddings",
                      shape=(len(self.concepts) or None, None))

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


def _short(text: str, limit: int = 300) -> str:
  """`text` on one line of at most `limit` characters."""
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _inside(path: str, root: str) -> bool:
  """True if `path` (symlinks resolved) is `root` or below it."""
  path, root = os.path.realpath(path), os.path.realpath(root)
  return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_entry_layer(path: str, layer: str) -> None:
  """An activations entry's description (<key>.json, when there is one)
  names the layer it was computed for."""
  described = os.path.splitext(path)[0] + ".json"
  try:
    with open(described, encoding="utf-8") as f:
      recorded = json.load(f).get("layer")
  except (OSError, ValueError, AttributeError):
    return
  if recorded is not None and recorded != layer:
    raise ValueError(_short(
        f"{ARRAYS_JSON}: activations/{layer} points at the array of layer "
        f"{recorded!r} ({path}): not this layer's array"))


def _mixed(path: str, name: str, why: str) -> ValueError:
  return ValueError(_short(
      f"{os.path.join(path, name)} {why}: the run is partial or mixed "
      "(cut short, or files of two runs); re-run describe_neurons"))


def _check_manifest(path: str) -> bool:
  """Checks the run files against the manifest; False if there is none.

  Raises:
    ValueError: naming the first file that is missing, changed, or not
      listed (one line).
  """
  manifest_path = os.path.join(path, RUN_MANIFEST)
  if not os.path.exists(manifest_path):
    return False
  try:
    with open(manifest_path, encoding="utf-8") as f:
      manifest = json.load(f)
    listed = manifest["files"]
    if manifest.get("format") != _MANIFEST_FORMAT or not isinstance(
        listed, dict):
      raise ValueError("not a run manifest")
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise _mixed(path, RUN_MANIFEST, f"is unreadable ({e})") from None
  for name in RUN_FILES:
    file_path = os.path.join(path, name)
    if name not in listed:
      if os.path.lexists(file_path):
        raise _mixed(path, name, "is not in the run's manifest")
      continue
    record = listed[name]
    if not os.path.isfile(file_path):
      raise _mixed(path, name, "is missing")
    try:
      with open(file_path, "rb") as f:
        data = f.read()
    except OSError as e:
      raise _mixed(path, name, f"cannot be read ({e.strerror})") from None
    if (len(data) != record.get("size")
        or hashlib.sha256(data).hexdigest() != record.get("sha256")):
      raise _mixed(path, name, "differs from the run's manifest")
  return True


def _check_consistent(run: Run, csv_neurons: list[Neuron] | None) -> None:
  """The run's files describe one run: the same neurons in
  descriptions.csv and neurons.jsonl, labels among the concepts, top
  images among the image ids, counts as config.json records them: the
  check of runs written before manifests (or by hand)."""
  path = run.path
  if csv_neurons is not None:
    ours = [(n.layer, n.unit, n.description) for n in run.neurons]
    theirs = [(n.layer, n.unit, n.description) for n in csv_neurons]
    if ours != theirs:
      raise _mixed(path, DESCRIPTIONS_CSV, f"does not match {NEURONS_JSONL}")
  if run.concepts:
    known = set(run.concepts)
    if any(n.description not in known for n in run.neurons):
      raise _mixed(path, CONCEPTS_TXT, "lacks labels of the neurons")
  if run.image_ids:
    ids = set(run.image_ids)
    if any(i not in ids for n in run.neurons for i in n.top_images):
      raise _mixed(path, IMAGE_IDS_TXT, "lacks top images of the neurons")
  for key, values, name in (("num_images", run.image_ids, IMAGE_IDS_TXT),
                            ("num_concepts", run.concepts, CONCEPTS_TXT)):
    recorded = run.config.get(key)
    if isinstance(recorded, int) and values and recorded != len(values):
      raise _mixed(path, name, f"has {len(values)} lines but {CONFIG_JSON} "
                   f"records {key}={recorded}")


def load_run(path: str | os.PathLike, cache_root: str | None = None) -> Run:
  """Loads the results directory written by describe_neurons.

  The run files are checked against the run's manifest (sizes and
  SHA-256) and against each other, so a partial or mixed run is refused.

  Args:
    path: the directory (see docs/results_format.md).
    cache_root: the only directory its arrays may be read from (a moved
      or copied cache: arrays.json's paths are taken relative to it);
      default the cache directory the run recorded.

  Returns:
    A `Run`; the cached arrays are loaded lazily by its methods.

  Raises:
    FileNotFoundError: if `path` is not a directory or holds neither
      neurons.jsonl nor descriptions.csv.
    ValueError: if a file is malformed, or the files are not one run's
      (one line naming the file).
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"results directory {path!r} does not exist")
  if cache_root is not None:
    cache_root = os.path.abspath(os.path.expanduser(os.fspath(cache_root)))
    if not os.path.isdir(cache_root):
      raise ValueError(f"activation_dir={cache_root!r} is not a directory")
  join = lambda name: os.path.join(path, name)
  verified = _check_manifest(path)
  if not verified:
    logging.info("%s has no %s (written before run manifests, or by hand): "
                 "its files are checked against each other only", path,
                 RUN_MANIFEST)
  csv_neurons = None
  if os.path.exists(join(NEURONS_JSONL)):
    neurons = _read_neurons_jsonl(join(NEURONS_JSONL))
    if os.path.exists(join(DESCRIPTIONS_CSV)):
      csv_neurons = _read_descriptions_csv(join(DESCRIPTIONS_CSV))
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
        value = json.load(f, parse_constant=_no_constant)
    except ValueError as e:  # JSON, UTF-8 or a NaN/inf constant.
      raise ValueError(_short(f"{join(name)} is not valid JSON: {e}")
                       ) from None
    if not isinstance(value, dict):
      raise ValueError(f"{join(name)} is not a JSON object")
    return value

  def optional_lines(name):
    if not os.path.exists(join(name)):
      return []
    try:
      return _read_lines(join(name))
    except UnicodeDecodeError as e:
      raise ValueError(_short(f"{join(name)} is not UTF-8 text: {e}")
                       ) from None

  run = Run(path=path, neurons=neurons, config=optional_json(CONFIG_JSON),
            concepts=optional_lines(CONCEPTS_TXT),
            image_ids=optional_lines(IMAGE_IDS_TXT),
            arrays=optional_json(ARRAYS_JSON),
            skipped_images=optional_lines(SKIPPED_TXT),
            cache_root=cache_root)
  if not verified:
    _check_consistent(run, csv_neurons)
  return run


def _no_constant(name: str) -> float:
  raise ValueError(f"{name} is not a finite number")


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
