"""The features analysis of a run: an SAE per layer, labelled and scored.

For each chosen layer: an SAE is trained on the run's cached activations
(or on every position of the layer's maps, positions=True) or loaded from
the run's cache (saved.py); every feature is labelled with the run's
similarity function and concept set (its codes on the probe images are the
kernel's activations) and scored like the neurons of the scoring analysis:
the held-out simulation correlation of its label, a permutation p-value
under the run's kernel and a Benjamini-Hochberg q-value over the layer's
features. Features that never fire on the probe images are inactive: no
label, no scores. User directions (D, C) are labelled and scored the same
way on the run's pooled activations projected onto them.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Sequence

from absl import logging
import numpy as np

from jax_dissect import similarity
from jax_dissect.analyses.features import config as config_lib
from jax_dissect.analyses.features import labels as labels_lib
from jax_dissect.analyses.features import model
from jax_dissect.analyses.features import positions as positions_lib
from jax_dissect.analyses.features import saved
from jax_dissect.analyses.features import training
from jax_dissect.analyses.linear_explanations import solver as linear_lib
from jax_dissect.analyses.scoring import significance
from jax_dissect.analyses.scoring import simulation
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import results as results_lib

NAME = "features"
DESCRIPTION = ("Sparse-autoencoder features of each layer (and user "
               "directions), labelled and scored like neurons.")
TABLE = "features"
SUMMARY_TABLE = "features_summary"
DIRECTIONS_TABLE = "directions"
SUMMARY_DIRECTIONS_TABLE = "directions_summary"
# Table.basis of the per-unit tables: their units are not the run's neurons.
BASIS = "sae"
DIRECTIONS_BASIS = "directions"
# features.csv: `unit` is the feature's index (the column the report keys
# per-unit tables by), `feature` the same index under the name.
COLUMNS = ("layer", "unit", "feature", "description", "similarity",
           "correlation", "p_value", "q_value", "frequency", "top_images")
LINEAR_COLUMNS = ("linear_explanation", "linear_correlation")


@dataclasses.dataclass
class UnitScores:
  """Labels and scores of U units (features or directions) of a layer.

  Attributes:
    labels: the kernel's labels (labels_lib.Labels).
    correlation: (U,) held-out simulation correlation of each label (NaN:
      inactive unit, or constant on the held-out images).
    p_values, q_values: (U,) permutation p-values and BH q-values over the
      layer's active units (NaN: inactive).
    frequency: (U,) share of probe images on which the unit is > 0.
    top_images: per unit the ids of its most activating probe images (at
      most results_lib.TOP_IMAGES; for features only images it fires on).
    linear: per unit (explanation text, held-out correlation), or None.
  """
  labels: labels_lib.Labels
  correlation: np.ndarray
  p_values: np.ndarray
  q_values: np.ndarray
  frequency: np.ndarray
  top_images: list[list[str]]
  linear: list[tuple[str, float]] | None = None


def _float(x: Any) -> float | None:
  x = float(x)
  return None if math.isnan(x) else x


def _top_images(units: np.ndarray, image_ids: Sequence[str],
                positive_only: bool) -> list[list[str]]:
  n_top = min(results_lib.TOP_IMAGES, units.shape[0])
  order = np.argsort(-units, axis=0, kind="stable")[:n_top].T
  out = []
  for u, rows in enumerate(order):
    if positive_only:
      rows = [i for i in rows if units[i, u] > 0]
    out.append([image_ids[i] for i in rows])
  return out


def _linear_text(concepts: Sequence[str], idx: np.ndarray, w: np.ndarray,
                 length: int) -> str:
  terms = [f"{float(w[j]):.3g}*{concepts[idx[j]]}" for j in range(length)]
  return " + ".join(terms).replace("+ -", "- ")


def score_units(results: results_lib.Run, units: np.ndarray,
                settings: config_lib.Settings, *,
                positive_only: bool = True) -> UnitScores:
  """Labels and scores the columns of units (N, U) on the run's P.

  Args:
    results: the run (P, concepts, kernel and its hyper-parameters, seed).
    units: (N, U) per-image activations (SAE codes, projections).
    settings: the checked options (split, seed, num_permutations...).
    positive_only: top images only where the unit is > 0 (SAE features).
  """
  units = np.asarray(units, np.float32)
  p = np.asarray(results.concept_activations(), np.float32)
  fn = results.similarity_fn
  kwargs = results.kernel_kwargs(fn)
  labels = labels_lib.label_units(units, p, kernel=fn,
                                  concepts=results.concepts,
                                  seed=results.seed, **kwargs)
  u = units.shape[1]
  correlation = np.full(u, np.nan, np.float32)
  p_values = np.full(u, np.nan)
  q_values = np.full(u, np.nan)
  active = labels.active
  linear = [("", float("nan"))] * u if settings.linear else None
  if active.any():
    idx = labels.index[active].astype(np.int64)
    act = units[:, active]
    sim = simulation.simulation_scores(
        act, p, idx, a=settings.presence_a, b=settings.presence_b,
        split=settings.split, seed=settings.seed)
    correlation[active] = sim.correlation
    hyper = similarity.fit_hyper(fn, units.shape[0], kwargs, results.seed)
    sig = significance.label_pvalues(
        act, p, fn, num_permutations=settings.num_permutations,
        seed=settings.seed, kernel_kwargs=hyper, labels=idx)
    p_values[active] = sig.p_values
    q_values[active] = sig.q_values
    if settings.linear:
      lin = linear_lib.linear_explanations(
          act, p, a=settings.presence_a, b=settings.presence_b,
          seed=settings.seed)
      for j, unit in enumerate(np.flatnonzero(active)):
        linear[unit] = (_linear_text(results.concepts, lin.concepts[j],
                                     lin.weights[j], int(lin.lengths[j])),
                        float(lin.correlation[j]))
  return UnitScores(
      labels=labels, correlation=correlation, p_values=p_values,
      q_values=q_values, frequency=np.mean(units > 0, axis=0),
      top_images=_top_images(units, results.image_ids, positive_only),
      linear=linear)


def unit_rows(layer: str, scores: UnitScores, index_column: str = "feature"
              ) -> list[dict[str, Any]]:
  """The per-unit table rows of a layer: COLUMNS (with `index_column` in
  the place of "feature"), then LINEAR_COLUMNS when asked."""
  rows = []
  names = scores.labels.names or [""] * len(scores.correlation)
  for unit in range(len(scores.correlation)):
    row = {"layer": layer, "unit": unit, index_column: unit}
    row.update({
        "description": names[unit],
        "similarity": _float(scores.labels.score[unit]),
        "correlation": _float(scores.correlation[unit]),
        "p_value": _float(scores.p_values[unit]),
        "q_value": _float(scores.q_values[unit]),
        "frequency": float(scores.frequency[unit]),
        "top_images": scores.top_images[unit]})
    if scores.linear is not None:
      row["linear_explanation"] = scores.linear[unit][0]
      row["linear_correlation"] = _float(scores.linear[unit][1])
    rows.append(row)
  return rows


def _mean(x: np.ndarray) -> float | None:
  x = np.asarray(x, np.float64)
  return _float(np.nanmean(x)) if np.isfinite(x).any() else None


def neuron_correlation(results: results_lib.Run, layer: str,
                       settings: config_lib.Settings) -> float | None:
  """Mean held-out correlation of the run's neuron labels of `layer`, on
  the same split as the features'."""
  index = {}
  for i, c in enumerate(results.concepts):
    index.setdefault(c, i)
  neurons = [n for n in results.layer_neurons(layer)
             if n.description in index]
  if not neurons:
    return None
  a = np.asarray(results.activations(layer), np.float32)
  units = [n.unit for n in neurons if 0 <= n.unit < a.shape[1]]
  labels = [index[n.description] for n in neurons if 0 <= n.unit < a.shape[1]]
  if not units:
    return None
  sim = simulation.simulation_scores(
      a[:, units], results.concept_activations(), np.asarray(labels),
      a=settings.presence_a, b=settings.presence_b, split=settings.split,
      seed=settings.seed)
  return _mean(sim.correlation)


def _significant(scores: UnitScores, alpha: float) -> int:
  q = scores.q_values
  return int(np.sum(np.isfinite(q) & (q < alpha)))


# ----------------------------------------------------------------------------
# Training data of a layer, and its SAE.
# ----------------------------------------------------------------------------


def _train_options(settings: config_lib.Settings, plan: config_lib.LayerPlan,
                   num_rows: int) -> dict[str, Any]:
  """train_sae's options (those that change the model, for its key)."""
  return {"k": plan.k or None, "batch_size": settings.batch_size,
          "lr": settings.lr or None,
          "epochs": max(1, math.ceil(settings.training_rows / num_rows)),
          "memory_bytes": settings.memory_bytes}


def layer_sae(results: results_lib.Run, cache: cache_lib.ArrayCache,
              plan: config_lib.LayerPlan, settings: config_lib.Settings,
              data: Any, num_rows: int, data_id: dict[str, Any]
              ) -> tuple[model.SparseAutoencoder, str, bool]:
  """The layer's SAE from the cache, or trained on `data` and saved.

  Returns:
    (the SAE, its file, whether it was trained now).
  """
  opts = _train_options(settings, plan, num_rows)
  key = saved.sae_key(cache, data=data_id, num_features=plan.num_features,
                      seed=settings.seed, options=opts)

  def train():
    logging.info("features: training an SAE of %d features on %s (%d rows "
                 "x %d channels, %d epoch(s))", plan.num_features,
                 plan.layer, num_rows, plan.width, opts["epochs"])
    return training.train_sae(data, plan.num_features, seed=settings.seed,
                              log_every=100, **opts)

  return saved.load_or_train(
      cache, key, train, describe={"run": results.path, "layer": plan.layer,
                                   "data": data_id, "options": opts,
                                   "num_features": plan.num_features,
                                   "seed": settings.seed})


def _encode(sae: model.SparseAutoencoder, maps: positions_lib.LayerMaps,
            pool: str) -> np.ndarray:
  """(N, F) pooled codes of per-position maps (array or stream)."""
  if maps.array is not None:
    return sae.encode(maps.array, pool=pool)
  return np.concatenate([sae.encode(b, pool=pool) for b in maps.passes()])


def layer_features(results: results_lib.Run, cache: cache_lib.ArrayCache,
                   plan: config_lib.LayerPlan, settings: config_lib.Settings,
                   maps: positions_lib.LayerMaps | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """features.csv rows and the summary of one layer."""
  a_id = saved.file_id(activations_path(results, plan.layer))
  if maps is None:
    a = np.asarray(results.activations(plan.layer), np.float32)
    sae, path, trained = layer_sae(results, cache, plan, settings, a,
                                   a.shape[0], {"pooled": a_id})
    codes = sae.encode(a)
    source = "pooled"
  else:
    maps.load()
    data_id = {"positions": a_id, **maps.identity}
    sae, path, trained = layer_sae(results, cache, plan, settings,
                                   maps.training_source(), maps.num_rows,
                                   data_id)
    codes = _encode(sae, maps, settings.feature_pool)
    maps.release()
    source = "positions"
  logging.info("features: labelling and scoring %d features of %s",
               sae.num_features, plan.layer)
  scores = score_units(results, codes, settings)
  rows = unit_rows(plan.layer, scores)
  fit = sae.fit
  active = scores.labels.active
  summary = {
      "layer": plan.layer, "basis": BASIS, "source": source,
      "width": sae.width, "num_features": sae.num_features, "k": sae.k,
      "training_rows": sae.config.get("rows_seen"),
      "fraction_of_variance_explained": _float(
          fit.get("fraction_of_variance_explained", float("nan"))),
      "mean_l0": _float(fit.get("mean_l0", float("nan"))),
      "dead_fraction": _float(fit.get("dead_fraction", float("nan"))),
      "active_fraction": float(np.mean(active)),
      "mean_correlation": _mean(scores.correlation),
      "neuron_mean_correlation": neuron_correlation(results, plan.layer,
                                                    settings),
      "n_significant": _significant(scores, settings.alpha),
      "significant_fraction": _significant(scores, settings.alpha) / max(
          1, sae.num_features),
      "alpha": settings.alpha, "num_permutations": settings.num_permutations,
      "feature_pool": settings.feature_pool if maps is not None else "",
      "trained": trained, "sae_file": path,
  }
  if settings.linear and scores.linear is not None:
    summary["mean_linear_correlation"] = _mean(
        [c for _, c in scores.linear])
  return rows, summary


def activations_path(results: results_lib.Run, layer: str) -> str:
  """The file of the run's cached activations of `layer`."""
  rel = (results.arrays.get("activations") or {}).get(layer)
  if rel is None:
    results.activations(layer)  # Raises the run's one-line error.
  return os.path.join(results.path, rel)


# ----------------------------------------------------------------------------
# Directions.
# ----------------------------------------------------------------------------


def layer_directions(results: results_lib.Run, layer: str,
                     directions: np.ndarray, settings: config_lib.Settings
                     ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """directions.csv rows and the summary of one layer: the run's pooled
  activations projected onto the unit directions, labelled and scored."""
  proj = labels_lib.project(results.activations(layer), directions)
  scores = score_units(results, proj, settings, positive_only=False)
  rows = unit_rows(layer, scores, "direction")
  summary = {"layer": layer, "basis": DIRECTIONS_BASIS,
             "directions": settings.directions,
             "num_directions": int(directions.shape[0]),
             "mean_correlation": _mean(scores.correlation),
             "neuron_mean_correlation": neuron_correlation(results, layer,
                                                           settings),
             "n_significant": _significant(scores, settings.alpha),
             "alpha": settings.alpha}
  return rows, summary


# ----------------------------------------------------------------------------
# The analysis.
# ----------------------------------------------------------------------------


def plot_summary(summaries: Sequence[dict[str, Any]], path: str) -> str:
  """Mean held-out correlation of the features' and the neurons' labels."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  names = [s["layer"] for s in summaries]
  x = np.arange(len(names))
  fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.2))
  feats = [s["mean_correlation"] or 0.0 for s in summaries]
  neurons = [s["neuron_mean_correlation"] or 0.0 for s in summaries]
  ax.bar(x - 0.2, feats, 0.4, label="SAE features", color="tab:orange")
  ax.bar(x + 0.2, neurons, 0.4, label="neurons", color="tab:blue")
  ax.axhline(0.0, color="gray", linewidth=0.8)
  ax.set_ylabel("mean held-out correlation")
  ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def _maps_of(results: results_lib.Run, cache: cache_lib.ArrayCache,
             plans: Sequence[config_lib.LayerPlan],
             settings: config_lib.Settings
             ) -> dict[str, positions_lib.LayerMaps]:
  """Per-position maps of the layers (positions=True), planned (memory and
  disk estimates, one-line refusals) before any training."""
  target = positions_lib.RunTarget(results, settings.image_batch_size)
  layers = [p.layer for p in plans]
  target.check_layers(layers)
  keys = {l: positions_lib.positions_key(
      cache, target, l, saved.file_id(activations_path(results, l)))
          for l in layers}
  modes = positions_lib.plan(
      target, layers, cache_positions=settings.cache_positions,
      memory_bytes=settings.memory_bytes,
      max_cache_bytes=settings.max_cache_bytes, cache=cache, keys=keys)
  return positions_lib.layer_maps(target, modes, cache, keys)


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  """Runs the analysis (see the module doc); options as get_config."""
  settings, plans, directions = config_lib.check(results, config)
  cache = cache_lib.ArrayCache(results.cache_dir())
  maps = {}
  if settings.sae and settings.positions:
    maps = _maps_of(results, cache, plans, settings)
  tables, charts, summary_lines = {}, {}, []
  if settings.sae:
    rows, summaries = [], []
    for plan in plans:
      r, s = layer_features(results, cache, plan, settings,
                            maps.get(plan.layer))
      rows += r
      summaries.append(s)
      summary_lines.append(
          f"{s['layer']}: {s['num_features']} features, variance explained "
          f"{_fmt(s['fraction_of_variance_explained'])}, L0 "
          f"{_fmt(s['mean_l0'])}, dead {_fmt(s['dead_fraction'])}, mean "
          f"correlation {_fmt(s['mean_correlation'])} (neurons "
          f"{_fmt(s['neuron_mean_correlation'])}), {s['n_significant']} with "
          f"q < {s['alpha']:g}" + ("" if s["trained"] else " (SAE cached)"))
    tables[TABLE] = results_lib.Table(
        rows, "SAE features per layer: label, held-out correlation, "
        "p and q values, activation frequency, top images", per_neuron=True,
        basis=BASIS)
    tables[SUMMARY_TABLE] = results_lib.Table(
        summaries, "SAE fit and labels per layer (features beside neurons)",
        json=True)
    charts[TABLE] = results_lib.Chart(
        lambda path: plot_summary(summaries, path),
        "Mean held-out correlation of the labels of SAE features and of "
        "neurons, per layer")
  if directions is not None:
    rows, summaries = [], []
    for plan in plans:
      r, s = layer_directions(results, plan.layer, directions, settings)
      rows += r
      summaries.append(s)
      summary_lines.append(
          f"{s['layer']}: {s['num_directions']} directions, mean correlation "
          f"{_fmt(s['mean_correlation'])}, {s['n_significant']} with q < "
          f"{s['alpha']:g}")
    tables[DIRECTIONS_TABLE] = results_lib.Table(
        rows, f"Directions of {settings.directions} per layer",
        per_neuron=True, basis=DIRECTIONS_BASIS)
    tables[SUMMARY_DIRECTIONS_TABLE] = results_lib.Table(
        summaries, "Directions per layer", json=True)
  return results_lib.AnalysisOutput(analysis=NAME, tables=tables,
                                    charts=charts, summary=summary_lines)


def _fmt(x: float | None) -> str:
  return "n/a" if x is None else f"{x:.3f}"
