"""Evaluation of final-layer labels against class names (paper Tables 1, 3).

For a layer whose neuron k is class k (e.g. ResNet's fc), each neuron's label
is compared with its class name:

- top-1 / top-5 accuracy: the class name is among the neuron's 1 / 5 best
  concepts of the similarity ranking (needs a concept set that holds the
  class names, e.g. imagenet_labels.txt);
- mean cosine similarity of label and class name in one or more text
  embedding spaces (CLIP's text tower; a sentence-embedding model such as
  all-mpnet-base-v2), which works with any concept set.

The analysis (jax_dissect.analyses.evaluate) re-runs any of the similarity
kernels on a run's cached A and P, so all functions are compared in one call
(Table 3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from typing import Any

from absl import logging
import numpy as np

from jax_dissect.clip import text_embed


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
    int (K,): the class name's position in the neuron's ranking, 0 when it
    is the label: the concepts that score higher, and those that tie with
    it at a lower index (ties go to the lower index, as the labels'
    argmax), come first; -1 where the class name is not a concept. Names
    match after `normalize_name`; if several concepts match, the best
    (then the first) counts.
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
      row = similarity[i]
      col = cols[int(np.argmax(row[cols]))]  # First of the best.
      ranks[i] = int(np.sum(row > row[col]) + np.sum(row[:col] == row[col]))
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


def read_descriptions(path: str | os.PathLike, layer: str
                      ) -> dict[int, list[str]]:
  """Open-vocabulary descriptions of a layer's neurons from a CSV.

  Args:
    path: a CSV with columns layer, unit, description and optionally
      label_2, label_3 (Describe-and-Dissect's dnd.csv; any method's
      descriptions in this shape).
    layer: the layer whose rows are read.

  Returns:
    {unit: [description, label_2, label_3 (those present and non-empty)]}.
  """
  import csv  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise FileNotFoundError(f"descriptions file {os.fspath(path)!r} does not "
                            "exist (run the dnd analysis first, or give a CSV"
                            " with columns layer,unit,description)")
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f)
    missing = {"layer", "unit", "description"} - set(reader.fieldnames or ())
    if missing:
      raise ValueError(f"{path} lacks columns {sorted(missing)}; it needs "
                       "layer,unit,description")
    out: dict[int, list[str]] = {}
    for row in reader:
      if row["layer"] != layer:
        continue
      try:
        unit = int(row["unit"])
      except ValueError as e:
        raise ValueError(f"{path}: unit {row['unit']!r} is not an int") from e
      out[unit] = [row[c].strip() for c in ("description", "label_2",
                                             "label_3")
                   if (row.get(c) or "").strip()]
  if not out:
    raise ValueError(f"{path} has no descriptions of layer {layer!r}")
  return out


def evaluate_descriptions(
    descriptions: Mapping[int, Sequence[str]], class_names: Sequence[str],
    embedders: Mapping[str, text_embed.TextEmbedFn] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
  """Scores open-vocabulary descriptions of class neurons (e.g. DnD's).

  Args:
    descriptions: {unit: [best description, next ones...]}; unit k is class
      k.
    class_names: the K class names.
    embedders: name -> text_embed_fn for the cos_<name> means.

  Returns:
    (summary, per_neuron) as evaluate_similarity: top1 is the share of
    described neurons whose best description is the class name (case- and
    space-insensitive), top3 whether any of the first three is; cos_<name>
    the mean cosine of the best description and the class name; per_neuron
    has unit, class_name, label, exact.
  """
  bad = sorted(u for u in descriptions if not 0 <= u < len(class_names))
  if bad:
    raise ValueError(f"described units {bad[:5]} are not class indices "
                     f"0..{len(class_names) - 1}")
  units = sorted(u for u in descriptions if descriptions[u])
  labels = [descriptions[u][0] for u in units]
  names = [class_names[u] for u in units]
  exact = np.array([normalize_name(l) == normalize_name(c)
                    for l, c in zip(labels, names)])
  top3 = np.array([normalize_name(c) in {normalize_name(l) for l in
                                          descriptions[u][:3]}
                   for u, c in zip(units, names)])
  summary: dict[str, Any] = {"n_neurons": len(units),
                             "top1": float(np.mean(exact)),
                             "top3": float(np.mean(top3))}
  per_neuron: dict[str, Any] = {"unit": units, "class_name": names,
                                "label": labels, "exact": exact}
  for name, fn in (embedders or {}).items():
    cos = label_cosines(labels, names, fn)
    per_neuron[f"cos_{name}"] = cos
    summary[f"cos_{name}"] = float(np.mean(cos))
  return summary, per_neuron


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
