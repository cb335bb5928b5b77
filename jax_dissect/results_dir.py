"""Reads a describe_neurons results directory (docs/results_format.md).

Every analysis (evaluate, profile, stability, compositional, weights, report)
starts from `load_results(path)`: labels and scores per neuron, the concept
list, probe image ids, the run's configuration, and lazy access to the cached
arrays A (N, K) per layer and P (N, M) that the labels were computed from.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Any

import numpy as np

DESCRIPTIONS = "descriptions.csv"
NEURONS = "neurons.jsonl"
CONFIG = "config.json"
CONCEPTS = "concepts.txt"
IMAGE_IDS = "image_ids.txt"
ARRAYS = "arrays.json"
# Where the analyses write their outputs by default, and where the report
# looks for them.
ANALYSIS_DIR = "analysis"


def _read_lines(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\r\n") for line in f]


def _read_neurons_jsonl(path: str) -> list[dict[str, Any]]:
  neurons = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        neurons.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{lineno}: not a JSON object: {e}") from e
  return neurons


def _read_descriptions_csv(path: str) -> list[dict[str, Any]]:
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    missing = {"layer", "unit", "description", "similarity"} - set(
        reader.fieldnames or ())
    if missing:
      raise ValueError(f"{path} lacks columns {sorted(missing)}; it must have "
                       "layer,unit,description,similarity")
    return [{"layer": r["layer"], "unit": int(r["unit"]),
             "description": r["description"],
             "similarity": float(r["similarity"]),
             "alternatives": [], "top_images": []} for r in reader]


@dataclasses.dataclass
class ResultsDir:
  """A loaded results directory.

  Attributes:
    path: the results directory.
    neurons: one dict per neuron, in file order, with keys layer, unit,
      description, similarity, alternatives, top_images (neurons.jsonl; from
      descriptions.csv with empty alternatives/top_images if it is absent).
    config: config.json as a dict ({} if absent).
    concepts: the concept set; column m of P is concepts[m] ([] if absent).
    image_ids: probe image ids; row i of A and P is image_ids[i].
    arrays: arrays.json as a dict ({} if absent).
  """
  path: str
  neurons: list[dict[str, Any]]
  config: dict[str, Any]
  concepts: list[str]
  image_ids: list[str]
  arrays: dict[str, Any]

  @property
  def layers(self) -> list[str]:
    """Layer names in the order they first appear."""
    return list(dict.fromkeys(n["layer"] for n in self.neurons))

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

  def _check_layer(self, layer: str) -> None:
    if layer not in self.layers:
      raise ValueError(f"layer {layer!r} is not in the results at {self.path}; "
                       f"layers: {self.layers}")

  def layer_neurons(self, layer: str) -> list[dict[str, Any]]:
    """The neurons of `layer`, sorted by unit."""
    self._check_layer(layer)
    return sorted((n for n in self.neurons if n["layer"] == layer),
                  key=lambda n: n["unit"])

  def _array_path(self, *keys: str) -> str:
    value: Any = self.arrays
    for key in keys:
      if not isinstance(value, dict) or key not in value:
        raise ValueError(
            f"{os.path.join(self.path, ARRAYS)} has no entry "
            f"{'/'.join(keys)!r}; cached arrays are needed to re-run kernels")
      value = value[key]
    path = os.path.join(self.path, value)  # Absolute paths stay as they are.
    if not os.path.exists(path):
      raise FileNotFoundError(
          f"cached array {'/'.join(keys)} not found at {path} (from "
          f"{os.path.join(self.path, ARRAYS)}); re-run describe_neurons")
    return path

  def activations(self, layer: str) -> np.ndarray:
    """A of `layer`: float32 (N, K), memory-mapped."""
    if layer not in self.arrays.get("activations", {}):
      self._check_layer(layer)
    return np.load(self._array_path("activations", layer), mmap_mode="r")

  def concept_activations(self) -> np.ndarray:
    """P: (N, M), memory-mapped."""
    return np.load(self._array_path("concept_activations"), mmap_mode="r")

  def image_embeddings(self) -> np.ndarray:
    """CLIP image embeddings of the probe set: (N, D), L2-normalised rows."""
    return np.load(self._array_path("image_embeddings"), mmap_mode="r")

  def text_embeddings(self) -> np.ndarray:
    """CLIP text embeddings of the concept set: (M, D), L2-normalised rows."""
    return np.load(self._array_path("text_embeddings"), mmap_mode="r")


def load_results(path: str | os.PathLike) -> ResultsDir:
  """Loads the results directory written by describe_neurons.

  Args:
    path: the directory (see docs/results_format.md).

  Returns:
    A `ResultsDir`; cached arrays are loaded lazily by its methods.

  Raises:
    FileNotFoundError: if `path` is not a directory or holds neither
      neurons.jsonl nor descriptions.csv.
  """
  path = os.fspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"results directory {path!r} does not exist")
  join = lambda name: os.path.join(path, name)
  if os.path.exists(join(NEURONS)):
    neurons = _read_neurons_jsonl(join(NEURONS))
  elif os.path.exists(join(DESCRIPTIONS)):
    neurons = _read_descriptions_csv(join(DESCRIPTIONS))
  else:
    raise FileNotFoundError(
        f"{path} holds neither {NEURONS} nor {DESCRIPTIONS}: not a "
        "describe_neurons results directory")
  for n in neurons:
    n.setdefault("alternatives", [])
    n.setdefault("top_images", [])
    n["unit"] = int(n["unit"])
    n["similarity"] = float(n["similarity"])

  def optional_json(name):
    if not os.path.exists(join(name)):
      return {}
    with open(join(name), encoding="utf-8") as f:
      return json.load(f)

  def optional_lines(name):
    return _read_lines(join(name)) if os.path.exists(join(name)) else []

  return ResultsDir(path=path, neurons=neurons, config=optional_json(CONFIG),
                    concepts=optional_lines(CONCEPTS),
                    image_ids=optional_lines(IMAGE_IDS),
                    arrays=optional_json(ARRAYS))


def analysis_dir(results: ResultsDir, out_dir: str | None = None) -> str:
  """Returns (and creates) the output dir: out_dir or <results>/analysis."""
  out = out_dir or os.path.join(results.path, ANALYSIS_DIR)
  os.makedirs(out, exist_ok=True)
  return out
