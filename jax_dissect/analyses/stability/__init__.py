"""Label stability: bootstrap resamples of the probe set and top_k sweeps.

  python scripts/analyze.py --analysis=stability --results_dir=results/rn50 \
      --num_resamples=20 --seed=0 --layers=layer4,fc

Writes stability.csv (per neuron: agreement with the full-data label, score
interval, label per top_k) and stability_summary.csv/.json (per layer: mean
agreement, share of neurons with agreement >= 0.9, ...). The report shows
each neuron's agreement beside its label.

The stability paper's score (Cha & Weng; jax_dissect.analyses.stability.
top_labels), for kernels with a top_k: per neuron, whether its top-5 label set
with 5 activating images equals that with 10 (16); stable_5_10 and
stable_5_16 per neuron, and stability_score.csv/.json with the percentage
per layer and over all layers pooled (the paper's table pools layer1..layer4).
Its table across configurations and bar chart: `jax-dissect reproduce
--table=stability`.

Robustness to pixel noise (noise_std > 0, e.g. 0.02 as in "Corrupting Neuron
Explanations"; off by default because it re-runs the target model and CLIP on
every probe image): Gaussian noise of that std is added to the probe images in
[0, 1] pixel space (after resize and crop, before normalisation, clipped to [0,
1]; jax_dissect.analyses.stability.noise), A and P are recomputed and the labels
re-derived with the run's kernel; per neuron label_under_noise and
kept_under_noise, per layer labels_kept_under_noise (the share of labels kept).

  python scripts/stability.py --results_dir=results/rn50 --noise_std=0.02
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from jax_dissect import clip
from jax_dissect import models
from jax_dissect import similarity
from jax_dissect.analyses.stability import bootstrap as stability_lib
from jax_dissect.analyses.stability import noise as robustness
from jax_dissect.analyses.stability import top_labels as top_labels_lib
from jax_dissect.analyses.stability.bootstrap import bootstrap_indices
from jax_dissect.analyses.stability.bootstrap import label_stability
from jax_dissect.analyses.stability.bootstrap import Stability
from jax_dissect.analyses.stability.noise import add_pixel_noise
from jax_dissect.analyses.stability.noise import labels_kept
from jax_dissect.analyses.stability.noise import noisy_batches
from jax_dissect.analyses.stability.top_labels import top_label_stability
from jax_dissect.analyses.stability.top_labels import TopLabelStability
from jax_dissect.data import probes as data_lib
from jax_dissect.models import capture as act_lib
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "add_pixel_noise", "bootstrap_indices", "DESCRIPTION", "get_config",
    "label_stability", "labels_kept", "layer_stability", "NAME",
    "noise_robustness", "noisy_arrays", "noisy_batches", "run", "Stability",
    "score_table", "top_label_stability", "TopLabelStability",
]

NAME = "stability"
DESCRIPTION = "Bootstrap and top_k stability of each neuron's label."


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layers = ()  # Layers to analyse (default: all).
  c.num_resamples = 20  # Bootstrap resamples B.
  c.seed = 0  # Seed of the resampling key (rank_reorder uses the run's).
  c.confidence = 0.95  # Coverage of the score interval.
  c.top_ks = stability_lib.DEFAULT_TOP_KS  # top_k values (soft_wpmi, wpmi).
  # Std of Gaussian pixel noise ([0, 1] pixel units) of the robustness
  # check (0.02 in the literature); 0 skips it.
  c.noise_std = 0.0
  c.noise_seed = 0  # Seed of the pixel noise.
  c.batch_size = 0  # Images per model batch of the noise check (0: the run's).
  # The stability paper's score: top-label sets with score_base_k activating
  # images against those with each of score_ks (kernels with a top_k).
  c.score_base_k = top_labels_lib.BASE_K
  c.score_ks = top_labels_lib.OTHER_KS
  c.score_labels = top_labels_lib.NUM_LABELS  # Size of the compared sets.
  # The noise check's target (default: config.json's registry name); a
  # package.module:function target must be given here, it is never run from
  # the run's files.
  c.target_model = ""
  return c


def _float(x) -> float | None:
  x = float(x)
  return None if np.isnan(x) else x


def layer_stability(results: results_lib.Run, layer: str, *,
                    num_resamples: int = 20, seed: int = 0,
                    confidence: float = 0.95,
                    top_ks: Sequence[int] = stability_lib.DEFAULT_TOP_KS,
                    kernel_overrides: Mapping[str, Any] | None = None,
                    score_base_k: int = top_labels_lib.BASE_K,
                    score_ks: Sequence[int] = top_labels_lib.OTHER_KS,
                    score_labels: int = top_labels_lib.NUM_LABELS,
                    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Stability of one layer with the run's kernel.

  Args:
    results: the run.
    layer: the layer.
    num_resamples: bootstrap resamples B.
    seed: seed of the resampling key (rank_reorder uses the run's seed).
    confidence: coverage of the score interval.
    top_ks: top_k values to try (soft_wpmi, wpmi).
    kernel_overrides: hyper-parameters to change from the run's.
    score_base_k: the stability paper's reference number of activating
      images.
    score_ks: its other numbers of activating images.
    score_labels: the size of its compared top-label sets.

  Returns:
    (rows, summary): one row per neuron (layer, unit, description,
    similarity, agreement, score_ci_low, score_ci_high, mode_label,
    top_k_agreement, label_top_k_<t> for each t) and the layer's summary
    (n_neurons, num_resamples, mean/median agreement, stable_fraction =
    share of neurons with agreement >= STABLE_AGREEMENT, mean CI width, mean
    top_k agreement, label_matches_results = share of recomputed labels
    equal to the run's descriptions). For a kernel with a top_k and
    score_ks <= N, the paper's score: per neuron stable_<b>_<k> and
    top_labels_k<k>, per layer stability_<b>_<k> (percent).
  """
  fn = results.similarity_fn
  kwargs = results.kernel_kwargs(fn, kernel_overrides)
  logging.info("stability: layer %s, %s %s, %d resamples", layer, fn, kwargs,
               num_resamples)
  st = stability_lib.label_stability(
      results.activations(layer), results.concept_activations(), fn,
      num_resamples=num_resamples, seed=seed, kernel_seed=results.seed,
      confidence=confidence, top_ks=top_ks, kernel_kwargs=kwargs)
  concepts = results.concepts
  neurons = {n.unit: n for n in results.layer_neurons(layer)}
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
  paper = _paper_score(results, layer, fn, kwargs, score_base_k, score_ks,
                       score_labels)
  if paper is not None:
    for row in rows:
      u = row["unit"]
      for k in paper.ks:
        row[f"stable_{paper.base_k}_{k}"] = bool(paper.stable[k][u])
      for k in (paper.base_k, *paper.ks):
        row[f"top_labels_k{k}"] = "; ".join(
            concepts[j] for j in paper.top_labels[k][u])
  matches = [neurons[r["unit"]].description == r["description"]
             for r in rows if r["unit"] in neurons]
  if matches and not all(matches):
    logging.warning("layer %s: %d recomputed labels differ from the results' "
                    "descriptions", layer, matches.count(False))
  summary = {
      "layer": layer, "n_neurons": len(rows), "similarity_fn": fn,
      "num_resamples": num_resamples, "seed": seed,
      "confidence": confidence,
      "mean_agreement": float(np.mean(st.agreement)),
      "median_agreement": float(np.median(st.agreement)),
      "stable_fraction": float(np.mean(
          st.agreement >= stability_lib.STABLE_AGREEMENT)),
      "mean_ci_width": float(np.mean(st.score_ci[:, 1] - st.score_ci[:, 0])),
      "top_ks": list(st.top_ks),
      "mean_top_k_agreement": (_float(np.mean(st.top_k_agreement))
                               if st.top_ks else None),
      "label_matches_results": (float(np.mean(matches)) if matches else None),
  }
  if paper is not None:
    for k in paper.ks:
      summary[f"stability_{paper.base_k}_{k}"] = paper.score(k)
  return rows, summary


def _paper_score(results: results_lib.Run, layer: str, fn: str,
                 kwargs: Mapping[str, Any], base_k: int, ks: Sequence[int],
                 num_labels: int) -> TopLabelStability | None:
  """The stability paper's score of a layer, or None where it is undefined
  (a kernel without top_k, or fewer probe images than the largest k)."""
  if not similarity.get_kernel(fn).uses_top_k or not ks:
    return None
  n = len(results.image_ids) or results.activations(layer).shape[0]
  if max(base_k, *ks) > n:
    logging.warning("stability score: top_k %d > N=%d probe images; "
                    "skipped", max(base_k, *ks), n)
    return None
  return top_labels_lib.top_label_stability(
      results.activations(layer), results.concept_activations(), fn,
      base_k=base_k, ks=ks, num_labels=num_labels, kernel_kwargs=kwargs,
      seed=results.seed)


def score_table(rows: Sequence[Mapping[str, Any]], base_k: int,
                ks: Sequence[int]) -> list[dict[str, Any]]:
  """The paper's score per layer and over all layers pooled.

  Args:
    rows: per-neuron rows with layer and stable_<base_k>_<k>.
    base_k: the reference k.
    ks: the other ks.

  Returns:
    One row per layer and a last row "all" (every neuron of the layers,
    as the paper pools layer1..layer4): layer, n_neurons,
    stability_<base_k>_<k> (percent) per k.
  """
  keys = [f"stable_{base_k}_{k}" for k in ks]
  scored = [r for r in rows if all(key in r for key in keys)]
  out = []
  layers = list(dict.fromkeys(r["layer"] for r in scored))
  for name, mine in [(l, [r for r in scored if r["layer"] == l])
                     for l in layers] + [("all", scored)]:
    if not mine or (name == "all" and len(layers) < 2):
      continue
    out.append({"layer": name, "n_neurons": len(mine), **{
        f"stability_{base_k}_{k}": 100.0 * float(np.mean(
            [bool(r[key]) for r in mine])) for k, key in zip(ks, keys)}})
  return out


def noisy_arrays(results: results_lib.Run, layers: Sequence[str], *,
                 std: float, seed: int = 0, batch_size: int = 0,
                 target_model: str = ""
                 ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """A per layer and P recomputed on the run's probe images with pixel noise.

  The run's target model, CLIP and probe set are rebuilt from its config; noise
  as jax_dissect.analyses.stability.noise describes (std 0 reproduces the run's
  A and P).

  Returns:
    ({layer: float32 (N, K)}, P float32 (N, M)).
  """
  cfg = results.config
  if cfg.get("concept_activations") or "image_embeddings" not in results.arrays:
    raise ValueError("noise_std needs a run whose P came from CLIP (this run "
                     "was given precomputed concept_activations)")
  name = models.run_target_model(
      cfg, target_model, os.path.join(results.path, results_lib.CONFIG_JSON))
  probe = data_lib.run_probe_set(results)
  n = len(probe)
  batch_size = batch_size or int(cfg.get("batch_size") or 64)
  spec, module, variables = models.load_target(
      name, cfg.get("target_weights"), int(cfg.get("target_seed", 0)))
  logging.info("stability: pixel noise std %g on %d images (target)", std, n)
  acts = act_lib.collect_activations(
      module, variables, robustness.noisy_batches(
          probe.load, n, spec.transform, std, seed=seed,
          batch_size=batch_size),
      list(layers), pool=act_lib.canonical_pool(cfg.get("pool_mode", "avg")),
      batch_size=batch_size, num_images=n,
      token_pool=act_lib.canonical_token_pool(cfg.get("token_pool", "cls")))
  embedder = clip.load_run_embedder(cfg)
  logging.info("stability: pixel noise std %g on %d images (CLIP)", std, n)
  image_emb = np.concatenate([
      embedder.embed_pixels(b, batch_size=batch_size)
      for b in robustness.noisy_batches(probe.load, n, embedder.transform,
                                        std, seed=seed,
                                        batch_size=batch_size)])
  p = clip.concept_activations(image_emb, results.text_embeddings(),
                               dtype=cfg.get("p_dtype") or "float32")
  return acts, np.asarray(p, np.float32)


def _labels(results: results_lib.Run, a: Any, p: Any) -> np.ndarray:
  """Label index per neuron with the run's kernel and hyper-parameters."""
  fn = results.similarity_fn
  sim = similarity.compute(fn, a, p, seed=results.seed,
                           **results.kernel_kwargs(fn))
  return np.asarray(similarity.top_concepts(sim, 1)[1][:, 0])


def noise_robustness(results: results_lib.Run, layers: Sequence[str], *,
                     std: float = robustness.DEFAULT_NOISE_STD,
                     seed: int = 0, batch_size: int = 0,
                     target_model: str = ""
                     ) -> tuple[dict[str, list[dict[str, Any]]],
                                dict[str, dict[str, Any]]]:
  """Share of labels kept when the probe images get pixel noise.

  Args:
    results: the run (target, CLIP and probe set rebuilt from it).
    layers: the layers.
    std: noise std in [0, 1] pixel units.
    seed: noise seed.
    batch_size: images per model batch (0: the run's).
    target_model: the target instead of config.json's (run_target_model).

  Returns:
    ({layer: per neuron {label_under_noise, kept_under_noise}},
     {layer: {noise_std, noise_seed, labels_kept_under_noise}}): the clean
    label is the run's kernel on its cached A and P.
  """
  acts, p_noisy = noisy_arrays(results, layers, std=std, seed=seed,
                               batch_size=batch_size,
                               target_model=target_model)
  p_clean = results.concept_activations()
  rows, summary = {}, {}
  for layer in layers:
    clean = _labels(results, results.activations(layer), p_clean)
    noisy = _labels(results, acts[layer], p_noisy)
    kept = robustness.labels_kept(clean, noisy)
    rows[layer] = [{"label_under_noise": results.concepts[j],
                    "kept_under_noise": bool(ok)}
                   for j, ok in zip(noisy, kept)]
    summary[layer] = {"noise_std": std, "noise_seed": seed,
                      "labels_kept_under_noise": float(np.mean(kept))}
  return rows, summary


def _check(results: results_lib.Run, config) -> list[str]:
  layers = options.names_list("layers", config.layers) or results.layers
  for layer in layers:
    results.check_layer(layer)
  config.num_resamples = options.integer("num_resamples",
                                         config.num_resamples, minimum=1)
  config.seed = options.integer("seed", config.seed)
  config.confidence = options.real("confidence", config.confidence, 0.0, 1.0,
                                   low_open=True, high_open=True)
  config.top_ks = tuple(options.integers("top_ks", config.top_ks, minimum=1))
  config.noise_std = options.real("noise_std", config.noise_std, 0.0, 1.0)
  config.noise_seed = options.integer("noise_seed", config.noise_seed)
  config.batch_size = options.integer("batch_size", config.batch_size,
                                      minimum=0)
  config.score_base_k = options.integer("score_base_k", config.score_base_k,
                                        minimum=1)
  config.score_ks = tuple(options.integers("score_ks", config.score_ks,
                                           minimum=1))
  config.score_labels = options.integer("score_labels", config.score_labels,
                                        minimum=1)
  return layers


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  layers = _check(results, config)
  noisy = None
  if config.noise_std > 0:
    noisy = noise_robustness(results, layers, std=config.noise_std,
                             seed=config.noise_seed,
                             batch_size=config.batch_size,
                             target_model=config.target_model)
  rows, summaries = [], []
  for layer in layers:
    r, s = layer_stability(results, layer,
                           num_resamples=config.num_resamples,
                           seed=config.seed, confidence=config.confidence,
                           top_ks=config.top_ks,
                           score_base_k=config.score_base_k,
                           score_ks=config.score_ks,
                           score_labels=config.score_labels)
    if noisy is not None:
      for row, n_row in zip(r, noisy[0][layer]):
        row.update(n_row)
      s.update(noisy[1][layer])
    rows += r
    summaries.append(s)
  base_k, ks = config.score_base_k, config.score_ks
  scores = score_table(rows, base_k, ks)
  tables = {}
  if scores:
    tables["stability_score"] = results_lib.Table(
        scores, f"Stability score (Cha & Weng): % of neurons whose top-"
        f"{config.score_labels} labels with {base_k} activating images are "
        f"those with {', '.join(map(str, ks))}", json=True)
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={
          **tables,
          "stability": results_lib.Table(
              rows, "Label stability per neuron", per_neuron=True,
              neuron_columns=("agreement", "score_ci_low", "score_ci_high")
              + (() if noisy is None else ("kept_under_noise",))),
          "stability_summary": results_lib.Table(
              summaries, "Label stability per layer", json=True),
      },
      summary=[f"{s['layer']}: mean agreement {s['mean_agreement']:.3f}, "
               f"stable fraction {s['stable_fraction']:.3f}" + (
                   "" if noisy is None else
                   f", labels kept under pixel noise (std "
                   f"{s['noise_std']:g}) {s['labels_kept_under_noise']:.3f}")
               for s in summaries]
      + [f"stability score {r['layer']}: " + ", ".join(
          f"{base_k}->{k} {r[f'stability_{base_k}_{k}']:.2f}%" for k in ks)
         for r in scores])
