"""Labelling one run's layers with another backbone's P, and what to compare.

Given a run's cached activations A (N, K) of a layer and a backbone's P
(N, M) over the run's probe images and concepts, `label_layer` labels
every neuron as describe_neurons would (the run's similarity function and
hyper-parameters; label = the best concept of S = sim(A, P)), and
`layer_row` measures, per backbone and layer:

- agreement: share of neurons whose label equals the run's label;
- mean_correlation / median_correlation: held-out simulation correlation
  of the labels (scoring.simulation_scores), each backbone simulating with
  its own P and its own presence parameters (documented or fitted), as
  Linear Explanations compared CLIP and SigLIP;
- mean_linear_correlation (when asked): mean held-out correlation of the
  layer's linear explanations on that backbone's P;
- top1 (a class layer, with class names that are all concepts): share of
  neurons labelled with their own class name.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging
import numpy as np

from jax_dissect import similarity
from jax_dissect.analyses.evaluate import metrics as evaluate_lib
from jax_dissect.analyses.linear_explanations import solver as linear_lib
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.store import results as results_lib


@dataclasses.dataclass(frozen=True)
class Settings:
  """Checked options of the comparison.

  Attributes:
    split: held-out images of the simulation scores (scoring.split_indices).
    seed: seed of the split (and of the linear explanations' split).
    linear_explanations: also fit linear explanations per backbone.
    max_length: most concepts per linear explanation.
    class_layer: the layer whose unit k is class k ("" for none).
    class_names: its K class names (() for none).
  """
  split: str | float = "half"
  seed: int = 0
  linear_explanations: bool = False
  max_length: int = 5
  class_layer: str = ""
  class_names: tuple[str, ...] = ()


def _float(x: Any) -> float | None:
  x = float(x)
  return None if np.isnan(x) else round(x, 6)


def label_layer(run: results_lib.Run, activations: Any, p: Any) -> np.ndarray:
  """(K,) concept index of each neuron's label under P, with the run's
  similarity function, hyper-parameters and seed."""
  fn = run.similarity_fn
  sim = similarity.compute(fn, np.asarray(activations, np.float32),
                           np.asarray(p, np.float32), seed=run.seed,
                           **run.kernel_kwargs(fn))
  return np.asarray(similarity.top_concepts(sim, 1)[1][:, 0], np.int64)


def run_labels(run: results_lib.Run, layer: str, num_neurons: int
               ) -> np.ndarray:
  """(K,) concept index of the run's own label of each unit.

  Raises:
    ValueError: a unit without a label, or a label not in concepts.txt.
  """
  return run.label_indices(layer, num_neurons)


def top1(labels: Sequence[str], class_names: Sequence[str]) -> float:
  """Share of neurons k whose label is class name k (case and spaces
  ignored)."""
  norm = evaluate_lib.normalize_name
  return float(np.mean([norm(l) == norm(c)
                        for l, c in zip(labels, class_names)]))


def layer_row(run: results_lib.Run, layer: str, activations: Any, p: Any,
              labels: np.ndarray, own: np.ndarray,
              presence: scoring.PresenceParams, settings: Settings
              ) -> dict[str, Any]:
  """The comparison of one backbone on one layer.

  Args:
    run: the run.
    layer: the layer.
    activations: its (N, K) A.
    p: the backbone's (N, M) P.
    labels: (K,) the backbone's labels (concept indices).
    own: (K,) the run's labels.
    presence: the backbone's presence parameters.
    settings: the options.

  Returns:
    {layer, n_neurons, agreement, mean_correlation, median_correlation,
    [mean_linear_correlation], [top1]}.
  """
  a = np.asarray(activations, np.float32)
  sim = scoring.simulation_scores(a, p, labels, a=presence.a, b=presence.b,
                                  split=settings.split, seed=settings.seed)
  corr = sim.correlation
  finite = np.isfinite(corr)
  row: dict[str, Any] = {
      "layer": layer, "n_neurons": int(a.shape[1]),
      "agreement": float(np.mean(labels == own)),
      "mean_correlation": _float(np.mean(corr[finite])) if finite.any()
                          else None,
      "median_correlation": _float(np.median(corr[finite])) if finite.any()
                            else None,
  }
  if settings.linear_explanations:
    logging.info("backbones: linear explanations of %s", layer)
    out = linear_lib.linear_explanations(a, p, a=presence.a, b=presence.b,
                                         seed=settings.seed,
                                         max_length=settings.max_length)
    ok = np.isfinite(out.correlation)
    row["mean_linear_correlation"] = (_float(np.mean(out.correlation[ok]))
                                      if ok.any() else None)
  if settings.class_names and layer == settings.class_layer:
    row["top1"] = top1([run.concepts[i] for i in labels],
                       settings.class_names)
  return row


def check_class_names(run: results_lib.Run, layer: str,
                      class_names: Sequence[str]) -> None:
  """The class layer has one unit per class and every class name is a
  concept (else top-1 means nothing): one-line ValueErrors."""
  units = len(run.layer_neurons(layer))
  if units != len(class_names):
    raise ValueError(f"class_names has {len(class_names)} names but layer "
                     f"{layer!r} has {units} units; top-1 needs one class "
                     "per unit")
  concepts = {evaluate_lib.normalize_name(c) for c in run.concepts}
  missing = [c for c in class_names
             if evaluate_lib.normalize_name(c) not in concepts]
  if missing:
    raise ValueError(f"{len(missing)} of {len(class_names)} class names are "
                     f"not in the run's concept set (first: {missing[0]!r}); "
                     "top-1 needs them all")


def plot(rows: Sequence[dict[str, Any]], path: str) -> str:
  """Bars per layer and backbone: mean held-out correlation, agreement with
  the run's labels, and (when present) the linear explanations' and top-1.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  backbones = list(dict.fromkeys(r["backbone"] for r in rows))
  layers = list(dict.fromkeys(r["layer"] for r in rows))
  panels = [("mean_correlation", "mean held-out correlation"),
            ("agreement", "agreement with the run's labels")]
  if any(r.get("mean_linear_correlation") is not None for r in rows):
    panels.append(("mean_linear_correlation",
                   "linear explanations' correlation"))
  if any(r.get("top1") is not None for r in rows):
    panels.append(("top1", "final-layer top-1"))
  fig, axes = plt.subplots(1, len(panels), squeeze=False, figsize=(
      max(4.5, 0.9 * len(layers) * len(backbones) / 2 + 3) * len(panels) / 1.6,
      3.4))
  width = 0.8 / len(backbones)
  x = np.arange(len(layers))
  value = {(r["backbone"], r["layer"]): r for r in rows}
  for ax, (key, title) in zip(axes[0], panels):
    for j, name in enumerate(backbones):
      ys = [(value.get((name, l)) or {}).get(key) for l in layers]
      ax.bar(x + (j - (len(backbones) - 1) / 2) * width,
             [np.nan if y is None else y for y in ys], width,
             label=_short(name))
    ax.set_title(title, fontsize=9)
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xticks(x, layers, rotation=30, ha="right", fontsize=8)
  handles, names = axes[0][0].get_legend_handles_labels()
  columns = min(len(backbones), 3)
  fig.legend(handles, names, loc="lower center", ncol=columns, fontsize=7)
  rows_of_legend = -(-len(backbones) // columns)
  fig.tight_layout(rect=(0, 0.06 * rows_of_legend + 0.02, 1, 1))
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _short(name: str, width: int = 28) -> str:
  return name if len(name) <= width else "..." + name[-(width - 3):]
