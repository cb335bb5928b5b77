"""How good is each label: simulation scores and permutation p-values.

  python scripts/score_explanations.py --results_dir=results/rn50 \
      --num_permutations=100 --split=half --seed=0

Per neuron of each layer, on the run's cached A and P
(jax_dissect.analyses.scoring.simulation,
jax_dissect.analyses.scoring.significance):
- correlation, spearman, auprc: how well the label's concept presence
  C[:, m] = sigmoid(a (P[:, m] + b)) predicts the neuron's activations on
  held-out probe images (a seeded split; split=all uses every image); a, b
  are the run's backbone's (documented, or fitted to its P, as
  describe_neurons recorded them; simulation.run_presence_params) unless
  presence_a and presence_b are given;
- p_value: permutation p-value of the neuron's label match under the run's
  similarity function and hyper-parameters (B = num_permutations null
  draws); q_value: Benjamini-Hochberg q-value over the layer;
  tested_concept: the concept whose score the p-value tests. With the
  default null (null=neuron) and soft_wpmi/wpmi the statistic is the
  neuron's likelihood standardized per concept, without the layer prior,
  and the tested concept is its best concept under that statistic, which
  can differ from the label (the layer prior moves labels away from
  concepts that other neurons share); with null=neuron_in_layer or layer
  it is the label. docs/significance.md says which hypothesis each null
  tests.
Writes explanation_scores.csv (per neuron; the report shows the columns
beside each label), explanation_scores_summary.csv/.json (per layer: mean
correlation, share of neurons with q < alpha) and explanation_scores.png.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from jax_dissect import similarity
from jax_dissect.analyses.scoring import significance
from jax_dissect.analyses.scoring import simulation as scoring_lib
from jax_dissect.analyses.scoring.significance import bh_qvalues
from jax_dissect.analyses.scoring.significance import label_pvalues
from jax_dissect.analyses.scoring.significance import LabelPValues
from jax_dissect.analyses.scoring.simulation import concept_presence
from jax_dissect.analyses.scoring.simulation import explanation_arrays
from jax_dissect.analyses.scoring.simulation import fit_presence_from_p
from jax_dissect.analyses.scoring.simulation import fit_presence_params
from jax_dissect.analyses.scoring.simulation import presence_params_for
from jax_dissect.analyses.scoring.simulation import PresenceParams
from jax_dissect.analyses.scoring.simulation import run_presence_params
from jax_dissect.analyses.scoring.simulation import simulation_scores
from jax_dissect.analyses.scoring.simulation import SimulationScores
from jax_dissect.analyses.scoring.simulation import parse_split
from jax_dissect.analyses.scoring.simulation import split_indices
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "bh_qvalues", "check_options", "COLUMNS", "concept_presence",
    "DESCRIPTION", "explanation_arrays", "fit_presence_from_p",
    "fit_presence_params", "get_config", "label_pvalues", "LabelPValues",
    "NAME", "parse_split", "plot_summary", "presence_option",
    "presence_params_for", "PresenceParams", "run", "run_presence_params",
    "score_layer", "Settings", "simulation_scores", "SimulationScores",
    "split_indices", "SUMMARY_TABLE", "TABLE",
]

NAME = "scoring"
DESCRIPTION = ("Simulation scores (correlation, Spearman, AUPRC) and "
               "permutation p-values / q-values of each label.")
TABLE = "explanation_scores"
SUMMARY_TABLE = "explanation_scores_summary"
COLUMNS = ("layer", "unit", "description", "correlation", "spearman",
           "auprc", "p_value", "q_value", "tested_concept")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layers = ()  # Layers to score (default: all).
  c.num_permutations = 100  # Null draws B per neuron (p >= 1 / (1 + B)).
  c.seed = 0  # Seed of the held-out split and of the null.
  c.split = "half"  # Held-out images: half, all, or a fraction in (0, 1).
  # Presence slope a and offset b (both or neither); unset: the run's
  # backbone's (documented, or fitted to its P).
  c.presence_a = ml_collections.config_dict.placeholder(float)
  c.presence_b = ml_collections.config_dict.placeholder(float)
  c.top_fraction = 0.05  # AUPRC positives: each neuron's top images.
  # neuron (default: H0 the neuron is independent of P), neuron_in_layer
  # (the neuron is independent of P and of the other neurons) or layer (the
  # layer is independent of P); see docs/significance.md.
  c.null = "neuron"
  c.alpha = 0.05  # Significance level of the summary's q < alpha share.
  return c


@dataclasses.dataclass(frozen=True)
class Settings:
  """Checked options of the analysis (see get_config)."""
  num_permutations: int = 100
  seed: int = 0
  split: str | float = "half"
  presence_a: float = scoring_lib.DEFAULT_PRESENCE_A
  presence_b: float = scoring_lib.DEFAULT_PRESENCE_B
  presence_source: str = "given"
  top_fraction: float = 0.05
  null: str = "neuron"
  alpha: float = 0.05


def presence_option(results: results_lib.Run, a: float | None,
                    b: float | None) -> scoring_lib.PresenceParams:
  """The presence parameters options a, b name: both given, or (both
  unset) the run's backbone's (scoring_lib.run_presence_params)."""
  if a is None and b is None:
    return scoring_lib.run_presence_params(results)
  if a is None or b is None:
    raise ValueError("set both presence_a and presence_b, or neither (the "
                     "run's backbone's values)")
  return scoring_lib.PresenceParams(
      options.real("presence_a", a, 0.0, low_open=True),
      options.real("presence_b", b), "given")


def check_options(results: results_lib.Run, config
                  ) -> tuple[list[str], Settings]:
  """(the layers to score, the checked settings); one-line ValueErrors."""
  layers = options.names_list("layers", config.layers) or results.layers
  for layer in layers:
    results.check_layer(layer)
  presence = presence_option(results, config.presence_a, config.presence_b)
  settings = Settings(
      num_permutations=options.integer(
          "num_permutations", config.num_permutations, minimum=1),
      seed=options.integer("seed", config.seed),
      split=parse_split(config.split),
      presence_a=presence.a, presence_b=presence.b,
      presence_source=presence.source,
      top_fraction=options.real("top_fraction", config.top_fraction, 0.0,
                                1.0, low_open=True),
      null=options.choice("null", config.null, significance.NULLS),
      alpha=options.real("alpha", config.alpha, 0.0, 1.0, low_open=True,
                         high_open=True))
  if not results.concepts:
    raise ValueError(f"{results.path} has no concepts.txt; it is needed to "
                     "find each label's concept")
  similarity.get_kernel(results.similarity_fn)
  # The split is checked before any kernel runs.
  scoring_lib.split_indices(len(results.image_ids) or
                            results.concept_activations().shape[0],
                            settings.split, settings.seed)
  return layers, settings


def _label_indices(results: results_lib.Run, layer: str,
                   num_neurons: int) -> tuple[np.ndarray, list[str]]:
  """(the (K,) concept index of each unit's label, the K labels)."""
  labels = results.label_indices(layer, num_neurons).astype(np.int32)
  return labels, [n.description for n in results.layer_neurons(layer)]


def _float(x) -> float | None:
  x = float(x)
  return None if np.isnan(x) else x


def _nan_stat(stat, x: np.ndarray) -> float | None:
  """stat (np.nanmean, np.nanmedian) of the finite values; None if none."""
  return _float(stat(x)) if np.any(np.isfinite(x)) else None


def _fmt(x: float | None) -> str:
  return "n/a" if x is None else f"{x:.3f}"


def score_layer(results: results_lib.Run, layer: str,
                settings: Settings = Settings()
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Scores the labels of one layer of a run.

  Args:
    results: the run (its cached A of `layer` and P are used).
    layer: the layer.
    settings: the checked options.

  Returns:
    (rows, summary): one row per neuron with COLUMNS, and the layer's
    summary (n_neurons, mean/median correlation, mean spearman and auprc,
    n_significant and significant_fraction = share of neurons with
    q_value < alpha, tested_is_label_fraction = share of neurons whose
    tested concept is their label, and the settings).
  """
  a = np.asarray(results.activations(layer), np.float32)
  p = np.asarray(results.concept_activations(), np.float32)
  labels, descriptions = _label_indices(results, layer, a.shape[1])
  fn = results.similarity_fn
  # The run's hyper-parameters and key (rank_reorder's is the run's seed).
  kwargs = similarity.fit_hyper(fn, a.shape[0], results.kernel_kwargs(fn),
                                results.seed)
  logging.info("scoring: layer %s (%d neurons), %s, B=%d", layer,
               a.shape[1], fn, settings.num_permutations)
  sim = scoring_lib.simulation_scores(
      a, p, labels, a=settings.presence_a, b=settings.presence_b,
      split=settings.split, seed=settings.seed, top_fraction=settings.top_fraction)
  # The default null tests each neuron's best concept under its statistic
  # (a given label that is not that concept would get a conservative
  # p-value); the others test the run's labels.
  sig = significance.label_pvalues(
      a, p, fn, num_permutations=settings.num_permutations, seed=settings.seed,
      kernel_kwargs=kwargs, null=settings.null,
      labels=None if settings.null == "neuron" else labels)
  rows = [{"layer": layer, "unit": unit, "description": descriptions[unit],
           "correlation": _float(sim.correlation[unit]),
           "spearman": _float(sim.spearman[unit]),
           "auprc": _float(sim.auprc[unit]),
           "p_value": float(sig.p_values[unit]),
           "q_value": float(sig.q_values[unit]),
           "tested_concept": results.concepts[int(sig.labels[unit])]}
          for unit in range(a.shape[1])]
  significant = sig.q_values < settings.alpha
  summary = {
      "layer": layer, "n_neurons": len(rows), "similarity_fn": fn,
      "mean_correlation": _nan_stat(np.nanmean, sim.correlation),
      "median_correlation": _nan_stat(np.nanmedian, sim.correlation),
      "mean_spearman": _nan_stat(np.nanmean, sim.spearman),
      "mean_auprc": _nan_stat(np.nanmean, sim.auprc),
      "n_significant": int(np.sum(significant)),
      "significant_fraction": float(np.mean(significant)),
      "alpha": settings.alpha, "num_permutations": settings.num_permutations,
      "null": sig.null, "statistic": sig.statistic,
      "tested_is_label_fraction": float(np.mean(sig.labels == labels)),
      "split": settings.split,
      "n_heldout": int(len(sim.heldout)), "seed": settings.seed,
      "presence_a": settings.presence_a, "presence_b": settings.presence_b,
      "presence_source": settings.presence_source,
  }
  return rows, summary


def plot_summary(summaries: Sequence[dict[str, Any]], path: str) -> str:
  """Two bar charts per layer: mean correlation, share with q < alpha."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [s["layer"] for s in summaries]
  x = np.arange(len(names))
  fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.2 * len(names) + 3),
                                          3.2))
  corr = [s["mean_correlation"] or 0.0 for s in summaries]
  axes[0].bar(x, corr, color="tab:blue")
  axes[0].set_ylabel("mean held-out correlation")
  axes[0].axhline(0.0, color="gray", linewidth=0.8)
  share = [100 * s["significant_fraction"] for s in summaries]
  axes[1].bar(x, share, color="tab:green")
  alpha = summaries[0]["alpha"] if summaries else 0.05
  axes[1].set_ylabel(f"% of neurons with q < {alpha:g}")
  axes[1].set_ylim(0, 100)
  for ax in axes:
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  layers, settings = check_options(results, config)
  rows, summaries = [], []
  for layer in layers:
    r, s = score_layer(results, layer, settings)
    rows += r
    summaries.append(s)
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={
          TABLE: results_lib.Table(
              rows, "Explanation scores per neuron", per_neuron=True,
              neuron_columns=COLUMNS[3:]),
          SUMMARY_TABLE: results_lib.Table(
              summaries, "Explanation scores per layer", json=True),
      },
      charts={
          TABLE: results_lib.Chart(
              lambda path: plot_summary(summaries, path),
              "Mean held-out correlation of the labels and share of "
              f"neurons with q < {settings.alpha:g}, per layer"),
      },
      summary=[f"{s['layer']}: mean correlation "
               f"{_fmt(s['mean_correlation'])}, {s['n_significant']}/"
               f"{s['n_neurons']} with q < {s['alpha']:g}"
               for s in summaries])
