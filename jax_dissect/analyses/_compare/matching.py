"""Neurons of two runs matched by label and by activation correlation.

Pure functions of arrays and label lists:

- `label_agreement(labels_a, labels_b)`: unit i of one run against unit i of
  the other (checkpoints of one architecture keep their unit order);
- `label_overlap(labels_a, labels_b)`: how much of one layer's vocabulary
  the other layer uses (no unit correspondence needed);
- `matches_by_label(labels_a, labels_b)`: for each neuron of A, the neurons
  of B with the same label;
- `correlation_matrix(a, b)`: Pearson correlation of every neuron of A with
  every neuron of B over the same probe images, (K_a, K_b);
- `best_matches(corr)`: each neuron of A's most correlated neuron of B.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _norm(label: str) -> str:
  return " ".join(label.lower().split())


def label_agreement(labels_a: Sequence[str], labels_b: Sequence[str]
                    ) -> float:
  """Share of units i whose labels are equal (case-insensitive).

  Raises:
    ValueError: if the layers have different numbers of units.
  """
  if len(labels_a) != len(labels_b):
    raise ValueError(f"label agreement needs the same units: {len(labels_a)} "
                     f"and {len(labels_b)} neurons")
  if not labels_a:
    return float("nan")
  return float(np.mean([_norm(a) == _norm(b)
                        for a, b in zip(labels_a, labels_b)]))


def label_overlap(labels_a: Sequence[str], labels_b: Sequence[str]
                  ) -> dict[str, float]:
  """How the two layers' label vocabularies overlap.

  Returns:
    {"jaccard": |A & B| / |A | B| of the distinct labels, "a_in_b": share
    of A's neurons whose label some neuron of B has, "b_in_a": the
    reverse}.
  """
  set_a = {_norm(l) for l in labels_a}
  set_b = {_norm(l) for l in labels_b}
  union = set_a | set_b
  return {
      "jaccard": len(set_a & set_b) / len(union) if union else float("nan"),
      "a_in_b": (float(np.mean([_norm(l) in set_b for l in labels_a]))
                 if labels_a else float("nan")),
      "b_in_a": (float(np.mean([_norm(l) in set_a for l in labels_b]))
                 if labels_b else float("nan")),
  }


def matches_by_label(labels_a: Sequence[str], labels_b: Sequence[str]
                     ) -> list[list[int]]:
  """For each neuron of A, the units of B with its label (ascending)."""
  units: dict[str, list[int]] = {}
  for j, label in enumerate(labels_b):
    units.setdefault(_norm(label), []).append(j)
  return [units.get(_norm(label), []) for label in labels_a]


def _standardize(x: np.ndarray, block: int) -> np.ndarray:
  """Columns centred and scaled to unit norm (zero columns stay zero)."""
  x = np.asarray(x, np.float64)
  out = np.empty_like(x)
  for start in range(0, x.shape[1], block):
    cols = x[:, start:start + block]
    cols = cols - cols.mean(axis=0)
    norm = np.linalg.norm(cols, axis=0)
    out[:, start:start + block] = cols / np.where(norm > 0, norm, 1.0)
  return out


def correlation_matrix(a: Any, b: Any, *, block: int = 4096) -> np.ndarray:
  """Pearson correlation of each column of a with each column of b.

  Args:
    a: A of one run's layer, (N, K_a).
    b: A of another run's layer on the same N probe images, (N, K_b).
    block: columns standardised at a time.

  Returns:
    float32 (K_a, K_b); 0 where a column is constant.
  """
  a, b = np.asarray(a), np.asarray(b)
  if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
    raise ValueError(f"activations must be (N, K) on the same N images; got "
                     f"{a.shape} and {b.shape}")
  return (_standardize(a, block).T @ _standardize(b, block)).astype(
      np.float32)


def best_matches(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Each row's most correlated column: (int (K_a,), float32 (K_a,))."""
  corr = np.asarray(corr)
  best = np.argmax(corr, axis=1)
  return best, corr[np.arange(corr.shape[0]), best]
