"""How much to trust a label: bootstrap and top_k stability.

Only the similarity kernel re-runs, on the cached A (N, K) and P (N, M) of a
results directory; no model or CLIP call.

- Bootstrap: B resamples of the probe set (N images drawn with replacement,
  from an explicit jax.random key); per neuron, the fraction of resamples
  whose label equals the full-data label ("agreement"), and a percentile
  confidence interval of the full-data label's score over the resamples.
- top_k: for soft_wpmi and wpmi, the label under top_k in {5, 10, 16, 50,
  100} (values > N are skipped) and the fraction of those equal to the
  full-data label.

Each resample gathers rows of A and P, so one extra copy of P is alive at a
time.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import jax
import numpy as np

from jax_dissect import rerun
from jax_dissect import results_dir as results_lib

DEFAULT_TOP_KS = (5, 10, 16, 50, 100)
# A neuron counts as stable in the layer summary at this agreement or more.
STABLE_AGREEMENT = 0.9


@dataclasses.dataclass
class Stability:
  """Stability of the labels of one layer's K neurons.

  Attributes:
    labels: int (K,) full-data label index (argmax of S).
    scores: float (K,) full-data score of that label.
    resample_labels: int (B, K) label index in each bootstrap resample.
    resample_scores: float (B, K) score of the full-data label in each
      resample.
    agreement: float (K,) fraction of resamples with the full-data label.
    score_ci: float (K, 2) percentile interval of resample_scores at
      `confidence`.
    confidence: the interval's coverage, e.g. 0.95.
    top_ks: the top_k values evaluated (empty if the kernel has no top_k).
    top_k_labels: int (T, K) label index under each of top_ks.
    top_k_agreement: float (K,) fraction of top_ks giving the full-data label
      (NaN if top_ks is empty).
  """
  labels: np.ndarray
  scores: np.ndarray
  resample_labels: np.ndarray
  resample_scores: np.ndarray
  agreement: np.ndarray
  score_ci: np.ndarray
  confidence: float
  top_ks: tuple[int, ...]
  top_k_labels: np.ndarray
  top_k_agreement: np.ndarray


def bootstrap_indices(key: jax.Array, num_images: int,
                      num_resamples: int) -> np.ndarray:
  """Row indices of `num_resamples` bootstrap resamples: int (B, N).

  Resample b uses jax.random.fold_in(key, b), so it does not depend on B.
  """
  return np.stack([
      np.asarray(jax.random.randint(jax.random.fold_in(key, b), (num_images,),
                                    0, num_images))
      for b in range(num_resamples)
  ]) if num_resamples else np.zeros((0, num_images), np.int64)


def label_stability(activations: np.ndarray, concept_activations: np.ndarray,
                    similarity_fn: str = "soft_wpmi", *,
                    num_resamples: int = 20, seed: int = 0,
                    confidence: float = 0.95,
                    top_ks: Sequence[int] = DEFAULT_TOP_KS,
                    kernel_kwargs: Mapping[str, Any] | None = None,
                    kernel_seed: int | None = None) -> Stability:
  """Bootstrap and top_k stability of one layer's labels.

  Args:
    activations: A, (N, K).
    concept_activations: P, (N, M).
    similarity_fn: name of the kernel (a key of similarity.SIMILARITY_FNS).
    num_resamples: B, the number of bootstrap resamples (>= 1).
    seed: seed of the jax.random key of the resamples.
    confidence: coverage of the score interval, in (0, 1).
    top_ks: top_k values to try (soft_wpmi and wpmi only; values > N are
      skipped with a warning).
    kernel_kwargs: the kernel's hyper-parameters (as in the run).
    kernel_seed: seed of rank_reorder's key, the same in every run (default
      `seed`); the run's seed reproduces its labels.

  Returns:
    A Stability.
  """
  rerun.check_similarity_name(similarity_fn)
  if not isinstance(num_resamples, (int, np.integer)) or num_resamples < 1:
    raise ValueError(f"num_resamples must be a positive int; got "
                     f"{num_resamples!r}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
  a = np.asarray(activations, np.float32)
  p = np.asarray(concept_activations, np.float32)
  if a.ndim != 2 or p.ndim != 2 or a.shape[0] != p.shape[0]:
    raise ValueError(f"activations (N, K) and concept_activations (N, M) "
                     f"must share N; got {a.shape} and {p.shape}")
  kwargs = dict(kernel_kwargs or {})
  kwargs.pop("key", None)
  n, k = a.shape
  key = jax.random.key(seed)
  k_seed = seed if kernel_seed is None else kernel_seed

  # rank_reorder's permutations use the same key in every run: only the
  # probe set varies between resamples (and the kernel compiles once).
  def run(a_, p_, **extra):
    return rerun.similarity_matrix(similarity_fn, a_, p_, seed=k_seed,
                                   **{**kwargs, **extra})

  full = run(a, p)
  labels = np.argmax(full, axis=1)
  scores = full[np.arange(k), labels]
  idx = bootstrap_indices(key, n, num_resamples)
  resample_labels = np.empty((num_resamples, k), np.int64)
  resample_scores = np.empty((num_resamples, k), np.float32)
  for b in range(num_resamples):
    s = run(a[idx[b]], p[idx[b]])
    resample_labels[b] = np.argmax(s, axis=1)
    resample_scores[b] = s[np.arange(k), labels]
  agreement = np.mean(resample_labels == labels[None], axis=0)
  tail = 100 * (1 - confidence) / 2
  score_ci = np.percentile(resample_scores, [tail, 100 - tail], axis=0).T

  used_top_ks: list[int] = []
  top_k_labels = []
  if similarity_fn in rerun.TOP_K_FNS:
    for t in top_ks:
      if t > n:
        logging.warning("top_k=%d > N=%d probe images: skipped", t, n)
        continue
      used_top_ks.append(int(t))
      top_k_labels.append(np.argmax(run(a, p, top_k=int(t)), axis=1))
  top_k_labels = (np.stack(top_k_labels) if top_k_labels
                  else np.zeros((0, k), np.int64))
  top_k_agreement = (np.mean(top_k_labels == labels[None], axis=0)
                     if used_top_ks else np.full(k, np.nan))
  return Stability(labels=labels, scores=scores,
                   resample_labels=resample_labels,
                   resample_scores=resample_scores, agreement=agreement,
                   score_ci=score_ci, confidence=confidence,
                   top_ks=tuple(used_top_ks), top_k_labels=top_k_labels,
                   top_k_agreement=top_k_agreement)


def _float(x) -> float | None:
  x = float(x)
  return None if np.isnan(x) else x


def layer_stability(results: results_lib.ResultsDir, layer: str, *,
                    num_resamples: int = 20, seed: int = 0,
                    confidence: float = 0.95,
                    top_ks: Sequence[int] = DEFAULT_TOP_KS,
                    kernel_overrides: Mapping[str, Any] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Stability of one layer of a results directory, with the run's kernel.

  Args:
    results: a loaded results directory.
    layer: the layer.
    num_resamples: bootstrap resamples B.
    seed: seed of the resampling key (rank_reorder uses the run's seed).
    confidence: coverage of the score interval.
    top_ks: top_k values to try (soft_wpmi, wpmi).
    kernel_overrides: hyper-parameters to change from the run's.

  Returns:
    (rows, summary): one row per neuron (layer, unit, description,
    similarity, agreement, score_ci_low, score_ci_high, mode_label,
    top_k_agreement, label_top_k_<t> for each t) and a per-layer summary
    (n_neurons, num_resamples, mean/median agreement, stable_fraction = share
    of neurons with agreement >= STABLE_AGREEMENT, mean CI width, mean top_k
    agreement, label_matches_results = share of recomputed labels equal to
    the results' descriptions).
  """
  fn = results.similarity_fn
  kwargs = rerun.kernel_kwargs(fn, results.similarity_kwargs, fn,
                               kernel_overrides)
  logging.info("stability: layer %s, %s %s, %d resamples", layer, fn, kwargs,
               num_resamples)
  st = label_stability(results.activations(layer),
                       results.concept_activations(), fn,
                       num_resamples=num_resamples, seed=seed,
                       kernel_seed=results.seed,
                       confidence=confidence, top_ks=top_ks,
                       kernel_kwargs=kwargs)
  concepts = results.concepts
  neurons = {n["unit"]: n for n in results.layer_neurons(layer)}
  rows = []
  for unit in range(len(st.labels)):
    votes = collections.Counter(st.resample_labels[:, unit].tolist())
    row = {"layer": layer, "unit": unit,
           "description": concepts[st.labels[unit]],
           "similarity": float(st.scores[unit]),
           "agreement": float(st.agreement[unit]),
           "score_ci_low": float(st.score_ci[unit, 0]),
           "score_ci_high": float(st.score_ci[unit, 1]),
           "mode_label": concepts[votes.most_common(1)[0][0]],
           "top_k_agreement": _float(st.top_k_agreement[unit])}
    for t, lab in zip(st.top_ks, st.top_k_labels):
      row[f"label_top_k_{t}"] = concepts[lab[unit]]
    rows.append(row)
  matches = [neurons[r["unit"]]["description"] == r["description"]
             for r in rows if r["unit"] in neurons]
  if matches and not all(matches):
    logging.warning("layer %s: %d recomputed labels differ from the results' "
                    "descriptions", layer, matches.count(False))
  summary = {
      "layer": layer, "n_neurons": len(rows), "similarity_fn": fn,
      "num_resamples": num_resamples, "seed": seed, "confidence": confidence,
      "mean_agreement": float(np.mean(st.agreement)),
      "median_agreement": float(np.median(st.agreement)),
      "stable_fraction": float(np.mean(st.agreement >= STABLE_AGREEMENT)),
      "mean_ci_width": float(np.mean(st.score_ci[:, 1] - st.score_ci[:, 0])),
      "top_ks": list(st.top_ks),
      "mean_top_k_agreement": (_float(np.mean(st.top_k_agreement))
                               if st.top_ks else None),
      "label_matches_results": (float(np.mean(matches)) if matches else None),
  }
  return rows, summary


def results_stability(results: results_lib.ResultsDir,
                      layers: Sequence[str] | None = None, **kwargs
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """`layer_stability` for several layers (default all); returns (all rows,
  one summary per layer)."""
  rows, summaries = [], []
  for layer in layers or results.layers:
    r, s = layer_stability(results, layer, **kwargs)
    rows += r
    summaries.append(s)
  return rows, summaries


STABILITY_CSV = "stability.csv"


def write_stability(rows: Sequence[Mapping[str, Any]],
                    summaries: Sequence[Mapping[str, Any]],
                    out_dir: str) -> dict[str, str]:
  """Writes stability.csv (per neuron) and stability_summary.json/.csv."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {"csv": os.path.join(out_dir, STABILITY_CSV),
           "summary_json": os.path.join(out_dir, "stability_summary.json"),
           "summary_csv": os.path.join(out_dir, "stability_summary.csv")}
  for key, table in (("csv", rows), ("summary_csv", summaries)):
    fields = list(dict.fromkeys(k for r in table for k in r))
    with open(paths[key], "w", encoding="utf-8", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=fields)
      writer.writeheader()
      writer.writerows(table)
  with open(paths["summary_json"], "w", encoding="utf-8") as f:
    json.dump(list(summaries), f, indent=2)
  return paths
