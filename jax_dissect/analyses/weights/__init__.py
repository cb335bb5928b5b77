"""Weight analysis (paper section 5): do strong connections join similar labels?

  python scripts/analyze.py --analysis=weights --results_dir=results/rn50 \
      --layer_in=layer4 --layer_out=fc --top_n=1000

  # As the paper: output neurons named by their class, mpnet embeddings.
  ... --layer_in=layer4 --layer_out=fc --top_n=50000 \
      --class_names=../shared/data/concepts/imagenet_labels.txt \
      --first_synonym --text_embedder=sentence

Correlates the weights connecting two labelled layers with the cosine
similarity of the connected neurons' labels (Pearson r and p-value over all
weights and the top-n), and draws the paper's curve: the mean similarity of
the k strongest weights against k (weights_<in>_<out>_curve.csv/.png). With
class_names the output neurons are named by their classes (the paper's
ground truth) instead of their CLIP-Dissect labels, and layer_out need not
be a labelled layer of the run. text_embedder=sentence (all-mpnet-base-v2)
is the paper's embedding space. The kernel is `layer_out`'s, taken from the
run's target model (rebuilt from config.json: registry name, weights, seed;
a `package.module:function` target is run only when given as target_model,
never from the run's files), or from a file (weights=kernel.npy, Flax
layout (in, out) / (kh, kw, in, out); transpose_torch for PyTorch's).
Writes weights_<in>_<out>.json and .png.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from jax_dissect import models
from jax_dissect.analyses.evaluate import metrics as evaluate_metrics
from jax_dissect.analyses.weights import connections as weights_lib
from jax_dissect.analyses.weights.connections import connection_matrix
from jax_dissect.analyses.weights.connections import label_similarity_matrix
from jax_dissect.analyses.weights.connections import load_weights
from jax_dissect.analyses.weights.connections import top_k_curve
from jax_dissect.analyses.weights.connections import weight_label_correlation
from jax_dissect.clip import text_embed
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "connection_matrix", "DESCRIPTION", "get_config",
    "label_similarity_matrix", "load_weights", "NAME", "run", "top_k_curve",
    "weight_label_correlation",
]

NAME = "weights"
DESCRIPTION = "Connection weights vs the similarity of the labels they join."


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layer_in = ""  # The earlier layer, e.g. layer4 (required).
  c.layer_out = ""  # The next layer, e.g. fc (required).
  c.weights = ""  # Kernel file (.npy/.npz); default: the run's target model.
  c.weights_key = ""  # Array name in an .npz.
  c.transpose_torch = False  # The file's kernel is in PyTorch layout.
  c.reduce = "mean"  # Spatial reduction of conv kernels.
  c.top_n = 1000  # Strongest-weight subset size.
  c.by_abs = False  # Rank the subset by |w|.
  # File of class names (one per line, class order): name the output
  # neurons by class, as the paper, instead of by their labels.
  c.class_names = ""
  c.first_synonym = False  # Keep each class name's text before its comma.
  c.curve_ks = ()  # k values of the top-k curve (default a 1-2-5 grid).
  # The run's target model (default: config.json's registry name); a
  # package.module:function target must be given here, it is never run from
  # the run's files.
  c.target_model = ""
  # Label embedder; sentence (all-mpnet-base-v2) is the paper's.
  text_embed.add_options(c, "cached+clip")
  return c


def _kernel(results: results_lib.Run, config) -> np.ndarray:
  if config.weights:
    w = weights_lib.load_weights(config.weights, config.weights_key or None)
    if config.transpose_torch:
      if w.ndim not in (2, 4):
        raise ValueError(f"transpose_torch: the kernel in {config.weights!r} "
                         f"has shape {w.shape}; expected 2-D or 4-D")
      w = np.transpose(w, (1, 0) if w.ndim == 2 else (2, 3, 1, 0))
    source = config.weights
  else:
    cfg = results.config
    name = models.run_target_model(
        cfg, config.target_model,
        os.path.join(results.path, results_lib.CONFIG_JSON))
    _, _, variables = models.load_target(
        name, cfg.get("target_weights"), int(cfg.get("target_seed", 0)))
    w = weights_lib.kernel_of(variables, config.layer_out)
    source = f"{name}:{config.layer_out}.kernel"
  w = np.asarray(w)
  if not np.issubdtype(w.dtype, np.number) or not np.all(np.isfinite(w)):
    raise ValueError(f"the kernel from {source} has NaN, inf or non-numeric "
                     "values")
  return w


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  if not config.layer_in or not config.layer_out:
    raise ValueError("layer_in and layer_out are required, e.g. "
                     "layer_in=layer4 layer_out=fc")
  results.check_layer(config.layer_in)
  class_names = None
  if config.class_names:
    class_names = evaluate_metrics.read_class_names(config.class_names,
                                                    config.first_synonym)
  else:
    results.check_layer(config.layer_out)
  options.choice("reduce", config.reduce, weights_lib.REDUCTIONS)
  top_n = options.integer("top_n", config.top_n, minimum=3)
  curve_ks = options.integers("curve_ks", config.curve_ks, minimum=1) or None
  embed = text_embed.from_options(config, results)
  w = weights_lib.connection_matrix(_kernel(results, config), config.reduce)
  labels_in = [n.description for n in results.layer_neurons(config.layer_in)]
  labels_out = (class_names if class_names is not None else
                [n.description
                 for n in results.layer_neurons(config.layer_out)])
  if w.shape != (len(labels_in), len(labels_out)):
    out_what = ("class names" if class_names is not None
                else "labelled neurons")
    raise ValueError(
        f"the kernel connects {w.shape[0]} -> {w.shape[1]} neurons but layers "
        f"{config.layer_in!r} and {config.layer_out!r} have {len(labels_in)} "
        f"labelled neurons and {len(labels_out)} {out_what} (is the kernel "
        "(in, out)?)")
  cos = weights_lib.label_similarity_matrix(labels_in, labels_out, embed)
  summary = {"layer_in": config.layer_in, "layer_out": config.layer_out,
             "output_names": ("class_names" if class_names is not None
                              else "labels"),
             **weights_lib.weight_label_correlation(
                 w, cos, top_n=top_n, by_abs=config.by_abs)}
  curve = weights_lib.top_k_curve(w, cos, curve_ks, by_abs=config.by_abs)
  summary["top_k_curve"] = curve
  stem = f"weights_{config.layer_in}_{config.layer_out}"
  title = f"{config.layer_in} -> {config.layer_out}"
  return results_lib.AnalysisOutput(
      analysis=NAME, instance=f"{config.layer_in}_{config.layer_out}",
      documents={stem: summary},
      tables={f"{stem}_curve": results_lib.Table(
          curve, f"Mean concept similarity of the k strongest weights "
          f"({title})")},
      charts={stem: results_lib.Chart(
          lambda path: weights_lib.plot_weight_correlation(
              w, cos, summary, path, title=title),
          f"Weights vs label similarity ({title})"),
              f"{stem}_curve": results_lib.Chart(
                  lambda path: weights_lib.plot_top_k_curve(
                      curve, summary["mean_cosine_all"], path, title=title),
                  f"Concept similarity of the top-k weights ({title})")},
      summary=[f"all weights: r={summary['r']:.4f} p={summary['p_value']:.3g} "
               f"(n={summary['n']}); top {summary['top_n']}: "
               f"r={summary['r_top']:.4f} p={summary['p_value_top']:.3g}"])
