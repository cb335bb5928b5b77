"""Evaluation of final-layer labels against class names (paper Tables 1, 3).

For a layer whose neuron k is class k (e.g. ResNet's fc), each neuron's label
is compared with its class name:

- top-1 / top-5 accuracy: the class name is among the neuron's 1 / 5 best
  concepts of the similarity ranking (needs a concept set that holds the
  class names, e.g. imagenet_labels.txt);
- mean cosine similarity of label and class name in one or more text
  embedding spaces (CLIP's text tower; a sentence-embedding model such as
  all-mpnet-base-v2), which works with any concept set.

`evaluate_layer` re-runs any of the similarity kernels on the cached A and P
of a results directory, so all functions are compared in one call (Table 3).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

from jax_dissect import rerun
from jax_dissect import results_dir as results_lib
from jax_dissect import text_embed

ALL_SIMILARITY_FNS = ("soft_wpmi", "wpmi", "cos_similarity",
                      "cos_similarity_cubed", "rank_reorder")


def normalize_name(name: str) -> str:
  """Case- and whitespace-insensitive form used to match labels to classes."""
  return " ".join(name.lower().split())


def read_class_names(path: str | os.PathLike,
                     first_synonym: bool = False) -> list[str]:
  """Reads class names, one per line in class-index order.

  Trailing newlines are ignored; a blank line inside the file is an error,
  since it would shift every later class index.

  Args:
    path: the file (e.g. imagenet_labels.txt).
    first_synonym: keep only the text before the first comma of each line
      ("tench, Tinca tinca" -> "tench").
  """
  with open(path, encoding="utf-8-sig") as f:
    names = [line.strip() for line in f.read().rstrip("\r\n").splitlines()]
  if first_synonym:
    names = [n.split(",")[0].strip() for n in names]
  if not names or any(not n for n in names):
    raise ValueError(f"{path}: class names must be one non-empty name per "
                     "line, in class-index order")
  return names


def class_name_ranks(similarity: np.ndarray, concepts: Sequence[str],
                     class_names: Sequence[str]) -> np.ndarray:
  """Rank of each neuron's class name in its similarity ranking.

  Args:
    similarity: S, (K, M); neuron k is class k.
    concepts: the M concepts (column m of S is concepts[m]).
    class_names: the K class names.

  Returns:
    int (K,): 0 when the class name is the best concept, r when r concepts
    score strictly higher; -1 where the class name is not a concept. Names
    match after `normalize_name`; if several concepts match, the best counts.
  """
  similarity = np.asarray(similarity, np.float32)
  k, m = similarity.shape
  if len(concepts) != m:
    raise ValueError(f"similarity has {m} concept columns but there are "
                     f"{len(concepts)} concepts")
  if len(class_names) != k:
    raise ValueError(f"similarity has {k} neurons but there are "
                     f"{len(class_names)} class names; a class-name evaluation "
                     "needs one class per neuron")
  columns: dict[str, list[int]] = {}
  for j, c in enumerate(concepts):
    columns.setdefault(normalize_name(c), []).append(j)
  ranks = np.full(k, -1, np.int64)
  for i, name in enumerate(class_names):
    cols = columns.get(normalize_name(name))
    if cols:
      best = similarity[i, cols].max()
      ranks[i] = int(np.sum(similarity[i] > best))
  return ranks


def top_k_accuracy(ranks: np.ndarray, k: int) -> float:
  """Fraction of neurons whose class name is within the top k (ranks < k)."""
  ranks = np.asarray(ranks)
  if np.any(ranks < 0):
    raise ValueError(f"{int(np.sum(ranks < 0))} class names are not in the "
                     "concept set; accuracy needs all of them")
  return float(np.mean(ranks < k))


def label_cosines(labels: Sequence[str], class_names: Sequence[str],
                  text_embed_fn: text_embed.TextEmbedFn) -> np.ndarray:
  """Cosine similarity of each label with its class name: float32 (K,)."""
  if len(labels) != len(class_names):
    raise ValueError(f"{len(labels)} labels but {len(class_names)} class "
                     "names")
  emb = text_embed.embed_unique(text_embed_fn, list(labels) + list(class_names))
  n = len(labels)
  return np.sum(emb[:n] * emb[n:], axis=1)


def evaluate_similarity(
    similarity: np.ndarray, concepts: Sequence[str],
    class_names: Sequence[str],
    embedders: Mapping[str, text_embed.TextEmbedFn] | None = None,
    top_ks: Sequence[int] = (1, 5)) -> tuple[dict[str, Any], dict[str, Any]]:
  """Scores one similarity matrix against class names.

  Args:
    similarity: S, (K, M), neuron k is class k.
    concepts: the M concepts.
    class_names: the K class names.
    embedders: name -> text_embed_fn; for each, the mean label/class-name
      cosine is reported as "cos_<name>".
    top_ks: accuracies to report as "top<k>".

  Returns:
    (summary, per_neuron): summary has n_neurons, top<k> (None if some class
    names are not concepts), n_classes_in_concepts and cos_<name>; per_neuron
    has arrays label, class_name, rank, score and cos_<name>.
  """
  similarity = np.asarray(similarity, np.float32)
  ranks = class_name_ranks(similarity, concepts, class_names)
  best = np.argmax(similarity, axis=1)
  labels = [concepts[j] for j in best]
  summary: dict[str, Any] = {"n_neurons": len(class_names),
                             "n_classes_in_concepts": int(np.sum(ranks >= 0))}
  per_neuron: dict[str, Any] = {
      "class_name": list(class_names), "label": labels, "rank": ranks,
      "score": similarity[np.arange(len(best)), best]}
  all_present = bool(np.all(ranks >= 0))
  if not all_present:
    logging.warning("%d of %d class names are not in the concept set: no "
                    "top-k accuracy", int(np.sum(ranks < 0)), len(ranks))
  for k in top_ks:
    summary[f"top{k}"] = top_k_accuracy(ranks, k) if all_present else None
  for name, fn in (embedders or {}).items():
    cos = label_cosines(labels, class_names, fn)
    per_neuron[f"cos_{name}"] = cos
    summary[f"cos_{name}"] = float(np.mean(cos))
  return summary, per_neuron


def evaluate_layer(
    results: results_lib.ResultsDir, layer: str, class_names: Sequence[str],
    similarity_names: Sequence[str] | None = None,
    embedders: Mapping[str, text_embed.TextEmbedFn] | None = None,
    kernel_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None, top_ks: Sequence[int] = (1, 5),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Compares similarity functions on a class layer of a results directory.

  Each kernel re-runs on the cached A of `layer` and P; the run's own
  function uses the run's hyper-parameters, the others their defaults.

  Args:
    results: a loaded results directory.
    layer: the layer whose neuron k is class k (e.g. "fc").
    class_names: the K class names in class-index order.
    similarity_names: kernels to compare; default the run's own; use
      ALL_SIMILARITY_FNS for paper Table 3.
    embedders: name -> text_embed_fn for the cosine columns (e.g.
      {"clip": ..., "mpnet": ...}).
    kernel_overrides: kernel name -> hyper-parameters to override.
    seed: seed of rank_reorder's key (default: the run's seed).
    top_ks: accuracies to report.

  Returns:
    (table, neuron_rows): one summary row per similarity function (keys
    similarity_fn, layer, n_neurons, top1, top5, cos_<name>, ...), and one
    row per neuron per function (similarity_fn, layer, unit, class_name,
    label, rank, score, cos_<name>).
  """
  names = list(similarity_names or [results.similarity_fn])
  seed = results.seed if seed is None else seed
  for name in names:
    rerun.check_similarity_name(name)
  if not results.concepts:
    raise ValueError(f"{results.path} has no concepts.txt; it is needed to "
                     "name the similarity columns")
  activations = np.asarray(results.activations(layer), np.float32)
  concept_activations = np.asarray(results.concept_activations(), np.float32)
  if activations.shape[1] != len(class_names):
    raise ValueError(f"layer {layer!r} has {activations.shape[1]} neurons but "
                     f"{len(class_names)} class names were given")
  table, neuron_rows = [], []
  for name in names:
    kwargs = rerun.kernel_kwargs(results.similarity_fn,
                                 results.similarity_kwargs, name,
                                 (kernel_overrides or {}).get(name))
    logging.info("evaluate: %s on layer %s (%s)", name, layer, kwargs)
    sim = rerun.similarity_matrix(name, activations, concept_activations,
                                  seed=seed, **kwargs)
    summary, per_neuron = evaluate_similarity(sim, results.concepts,
                                              class_names, embedders, top_ks)
    table.append({"similarity_fn": name, "layer": layer, **summary})
    for unit in range(len(class_names)):
      row = {"similarity_fn": name, "layer": layer, "unit": unit}
      for key, values in per_neuron.items():
        v = values[unit]
        row[key] = v.item() if isinstance(v, np.generic) else v
      neuron_rows.append(row)
  return table, neuron_rows


def _write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, "w", encoding="utf-8", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def write_evaluation(table: Sequence[Mapping[str, Any]],
                     neuron_rows: Sequence[Mapping[str, Any]],
                     out_dir: str) -> dict[str, str]:
  """Writes evaluation.csv/.json (one row per function) and
  evaluation_neurons.csv; returns {name: path}."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"csv": os.path.join(out_dir, "evaluation.csv"),
           "json": os.path.join(out_dir, "evaluation.json"),
           "neurons_csv": os.path.join(out_dir, "evaluation_neurons.csv")}
  _write_csv(paths["csv"], table)
  with open(paths["json"], "w", encoding="utf-8") as f:
    json.dump(list(table), f, indent=2)
  _write_csv(paths["neurons_csv"], neuron_rows)
  return paths


def format_table(table: Sequence[Mapping[str, Any]]) -> str:
  """A plain-text table of the summary rows, for logs and the terminal."""
  skip = {"layer"}
  cols = [k for k in dict.fromkeys(k for r in table for k in r)
          if k not in skip]

  def fmt(v):
    if v is None:
      return "-"
    if isinstance(v, float):
      return f"{v:.4f}"
    return str(v)

  cells = [[fmt(r.get(c)) for c in cols] for r in table]
  widths = [max(len(c), *(len(row[i]) for row in cells))
            for i, c in enumerate(cols)]
  lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
  lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
  return "\n".join(lines)
