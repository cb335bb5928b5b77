"""The stability paper's score: do a neuron's top labels survive more images?

Cha & Weng ("Expanding CLIP-Dissect: Exploring the Impact of Activating
Image Diversity and Stability", section 3.3) label each neuron with k = 5, 10
and 16 activating images and ask, per neuron, whether the set of its top-5
labels under k = 5 equals the first 5 labels under k = 10 (and k = 16). The
score of a layer (or of several layers pooled, as the paper's table pools
layer1..layer4 of ResNet-50) is the percentage of neurons for which it does.

Here "k activating images" is the kernel's `top_k` (soft_wpmi: the images
that get a membership probability; wpmi: the example set B_k), so only
kernels with a top_k have this score. Labels are a neuron's best concepts by
similarity, ties to the lower concept index (similarity.top_concepts).

Note on the published numbers (99.8-100%): the paper's code ranks concepts
of one similarity matrix with torch.topk at k = 5, 10 and 16 and compares the
first five of each, which agree except for ties; the prose defines the
comparison across numbers of activating images, which is what is computed
here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

import numpy as np

from jax_dissect import similarity

BASE_K = 5
OTHER_KS = (10, 16)
NUM_LABELS = 5


@dataclasses.dataclass
class TopLabelStability:
  """The paper's stability of one layer's K neurons.

  Attributes:
    base_k: the reference number of activating images (5).
    ks: the other numbers of activating images (10, 16).
    num_labels: how many top labels are compared as a set (5).
    top_labels: top_k -> int (K, num_labels) concept indices, best first.
    stable: k -> bool (K,): top-label set under k equals that under base_k.
  """
  base_k: int
  ks: tuple[int, ...]
  num_labels: int
  top_labels: dict[int, np.ndarray]
  stable: dict[int, np.ndarray]

  def score(self, k: int) -> float:
    """Percentage of neurons stable from base_k to k."""
    return 100.0 * float(np.mean(self.stable[k]))


def same_label_sets(labels_a: np.ndarray, labels_b: np.ndarray) -> np.ndarray:
  """Per row, whether two label lists hold the same set: bool (K,).

  Args:
    labels_a: int (K, L) label indices.
    labels_b: int (K, L) label indices.
  """
  a, b = np.asarray(labels_a), np.asarray(labels_b)
  if a.shape != b.shape or a.ndim != 2:
    raise ValueError(f"label lists must both be (K, L); got {a.shape} and "
                     f"{b.shape}")
  return np.all(np.sort(a, axis=1) == np.sort(b, axis=1), axis=1)


def stability_from_labels(top_labels: Mapping[int, np.ndarray], *,
                          base_k: int = BASE_K,
                          ks: Sequence[int] = OTHER_KS,
                          num_labels: int = NUM_LABELS
                          ) -> TopLabelStability:
  """The score from each k's ranked labels (the first num_labels are used).

  Args:
    top_labels: k -> int (K, L >= num_labels) label indices, best first,
      for base_k and every k of ks.
    base_k: the reference k.
    ks: the other ks.
    num_labels: size of the compared sets.

  Returns:
    A TopLabelStability.
  """
  missing = [k for k in (base_k, *ks) if k not in top_labels]
  if missing:
    raise ValueError(f"no labels for top_k {missing}; have "
                     f"{sorted(top_labels)}")
  kept = {int(k): np.asarray(top_labels[k])[:, :num_labels]
          for k in (base_k, *ks)}
  short = [k for k, v in kept.items() if v.shape[1] < num_labels]
  if short:
    raise ValueError(f"top_k {short} have fewer than num_labels="
                     f"{num_labels} labels")
  stable = {int(k): same_label_sets(kept[base_k], kept[k]) for k in ks}
  return TopLabelStability(base_k=int(base_k), ks=tuple(int(k) for k in ks),
                           num_labels=int(num_labels), top_labels=kept,
                           stable=stable)


def top_labels_by_k(activations: Any, concept_activations: Any,
                    similarity_fn: str, top_ks: Sequence[int], *,
                    num_labels: int = NUM_LABELS,
                    kernel_kwargs: Mapping[str, Any] | None = None,
                    seed: int = 0, devices: Any = None
                    ) -> dict[int, np.ndarray]:
  """Each top_k's ranked labels: {k: int (K, num_labels)}.

  Args:
    activations: A, (N, K).
    concept_activations: P, (N, M).
    similarity_fn: a kernel with a top_k (soft_wpmi, wpmi).
    top_ks: the numbers of activating images (each <= N).
    num_labels: labels kept per neuron.
    kernel_kwargs: the kernel's other hyper-parameters.
    seed: the kernel's seed.
    devices: similarity.compute's devices.
  """
  kernel = similarity.get_kernel(similarity_fn)
  if not kernel.uses_top_k:
    raise ValueError(f"similarity_fn={similarity_fn!r} has no top_k: the "
                     "stability score needs soft_wpmi or wpmi")
  n = np.shape(activations)[0]
  too_big = [k for k in top_ks if k > n]
  if too_big:
    raise ValueError(f"top_k {too_big} > N={n} probe images")
  kwargs = dict(kernel_kwargs or {})
  kwargs.pop("key", None)
  out = {}
  for k in dict.fromkeys(int(k) for k in top_ks):
    sim = similarity.compute(similarity_fn, activations, concept_activations,
                             seed=seed, devices=devices,
                             **{**kwargs, "top_k": k})
    out[k] = similarity.top_concepts(sim, num_labels)[1]
  return out


def top_label_stability(activations: Any, concept_activations: Any,
                        similarity_fn: str = "soft_wpmi", *,
                        base_k: int = BASE_K, ks: Sequence[int] = OTHER_KS,
                        num_labels: int = NUM_LABELS,
                        kernel_kwargs: Mapping[str, Any] | None = None,
                        seed: int = 0, devices: Any = None
                        ) -> TopLabelStability:
  """The stability paper's score of one layer (see the module docstring).

  Args:
    activations: A, (N, K).
    concept_activations: P, (N, M).
    similarity_fn: soft_wpmi or wpmi.
    base_k: reference number of activating images.
    ks: other numbers of activating images.
    num_labels: size of the compared top-label sets.
    kernel_kwargs: the kernel's other hyper-parameters (top_k is set).
    seed: the kernel's seed.
    devices: similarity.compute's devices.
  """
  labels = top_labels_by_k(activations, concept_activations, similarity_fn,
                           (base_k, *ks), num_labels=num_labels,
                           kernel_kwargs=kernel_kwargs, seed=seed,
                           devices=devices)
  return stability_from_labels(labels, base_k=base_k, ks=ks,
                               num_labels=num_labels)


def plot_scores(rows: Sequence[Mapping[str, Any]], ks: Sequence[int],
                base_k: int, path: str, *, group: str = "layer",
                title: str = "") -> str:
  """Grouped bars of the score per row (layer or configuration); PNG.

  Args:
    rows: dicts with `group` and stability_<base_k>_<k> (percent) per k.
    ks: the other ks (one bar per k in each group).
    base_k: the reference k.
    path: the PNG.
    group: the key naming each group of bars.
    title: the chart's title.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [str(r[group]) for r in rows]
  width = 0.8 / max(len(ks), 1)
  fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(rows) + 2), 3.4))
  x = np.arange(len(rows))
  low = 100.0
  for i, k in enumerate(ks):
    values = [float(r.get(f"stability_{base_k}_{k}") or 0.0) for r in rows]
    low = min([low] + values)
    bars = ax.bar(x + (i - (len(ks) - 1) / 2) * width, values, width,
                  label=f"k={base_k} to k={k}")
    ax.bar_label(bars, fmt="%.1f", fontsize=7)
  ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("stability score (%)")
  ax.set_ylim(max(0.0, low - 10.0), 101.0)
  ax.legend(fontsize=8, loc="lower right")
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
