"""Linear explanations: each neuron as a short weighted sum of concepts.

  python scripts/analyze.py --analysis=linear_explanations \
      --results_dir=results/rn50 --layer=layer4 --max_length=10

For every neuron of the chosen layers, a sparse linear model over concept
presences C = sigmoid(a (P + b)) (a, b: the run's backbone's, documented or
fitted to its P, unless given) is searched
(jax_dissect.analyses.linear_explanations.solver: elastic-net ranking, then
greedy forward selection on half the probe images, scored on the other half).
Writes linear_explanations.csv: per neuron its held-out correlation, concepts
and weights (on C) and bias, and the held-out correlation of its single label
(C[:, label], scoring.simulation_scores on the same split). The report shows
both correlations and the explanation beside each neuron's label.
"""

from __future__ import annotations

from absl import logging
import ml_collections
import numpy as np

from jax_dissect.analyses.linear_explanations import solver as linear_lib
from jax_dissect.analyses.linear_explanations.solver import elastic_net
from jax_dissect.analyses.linear_explanations.solver import greedy_search
from jax_dissect.analyses.linear_explanations.solver import linear_explanations
from jax_dissect.analyses.linear_explanations.solver import LinearExplanations
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "DESCRIPTION", "elastic_net", "get_config", "greedy_search", "layer_rows",
    "linear_explanations", "LinearExplanations", "NAME", "run",
]

NAME = "linear_explanations"
DESCRIPTION = ("Each neuron as a short weighted sum of concepts, with the "
               "held-out correlation of it and of the single label.")


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layer = ""  # Layer(s) to explain, comma-separated (default: all).
  # Presence slope a and offset b of C = sigmoid(a (P + b)), both or
  # neither; unset: the run's backbone's (documented, or fitted to its P).
  c.a = ml_collections.config_dict.placeholder(float)
  c.b = ml_collections.config_dict.placeholder(float)
  c.width = 10  # Candidates tried per greedy step.
  c.max_length = 10  # Most concepts per explanation.
  c.tolerance = 0.02  # Smallest held-out correlation gain that adds one.
  c.lam = 0.05  # Elastic-net penalty strength (ranks the candidates).
  c.alpha = 0.99  # Elastic-net L1 share.
  c.seed = 0  # Seed of the fit/held-out split of the probe images.
  return c


def _check(results: results_lib.Run, config) -> tuple[list[str], dict]:
  layers = (options.names_list("layer", config.layer) if config.layer
            else results.layers)
  for layer in layers:
    results.check_layer(layer)
  if config.a is None and config.b is None:
    presence = scoring.run_presence_params(results)
  elif config.a is None or config.b is None:
    raise ValueError("set both a and b, or neither (the run's backbone's "
                     "values)")
  else:
    presence = scoring.PresenceParams(
        options.real("a", config.a, 0.0, low_open=True),
        options.real("b", config.b), "given")
  a, b = presence.a, presence.b
  opts = {
      "width": options.integer("width", config.width, minimum=1),
      "max_length": options.integer("max_length", config.max_length,
                                    minimum=1),
      "tolerance": options.real("tolerance", config.tolerance, 0.0),
      "lam": options.real("lam", config.lam, 0.0),
      "alpha": options.real("alpha", config.alpha, 0.0, 1.0),
  }
  seed = options.integer("seed", config.seed)
  return layers, {"a": a, "b": b, "presence_source": presence.source,
                  "seed": seed, **opts}


def _label_indices(results: results_lib.Run, layer: str,
                   num_neurons: int) -> np.ndarray:
  """The run's label of each unit as a concept index (-1: none)."""
  index = {c: i for i, c in enumerate(results.concepts)}
  out = np.full((num_neurons,), -1, np.int64)
  for n in results.layer_neurons(layer):
    if 0 <= n.unit < num_neurons:
      out[n.unit] = index.get(n.description, -1)
  return out


def _float(x) -> float | None:
  x = float(x)
  return None if np.isnan(x) else round(x, 6)


def layer_rows(results: results_lib.Run, layer: str, settings: dict
               ) -> tuple[list[dict], dict]:
  """Per-neuron rows and the layer's summary."""
  act = results.activations(layer)
  p = results.concept_activations()
  a, b, seed = settings["a"], settings["b"], settings["seed"]
  opts = {k: v for k, v in settings.items()
          if k not in ("a", "b", "seed", "presence_source")}
  logging.info("linear explanations: layer %s, %d neurons", layer,
               act.shape[1])
  out = linear_lib.linear_explanations(act, p, a=a, b=b, seed=seed, **opts)
  labels = _label_indices(results, layer, act.shape[1])
  single = np.full((act.shape[1],), np.nan, np.float32)
  has = labels >= 0
  if has.any():
    single[has] = scoring.simulation_scores(
        np.asarray(act)[:, has], p, labels[has].astype(np.int64), a=a, b=b,
        seed=seed).correlation
  width = settings["max_length"]
  rows = []
  for unit in range(act.shape[1]):
    row = {"layer": layer, "unit": unit,
           "correlation": _float(out.correlation[unit])}
    for j in range(width):
      used = j < out.lengths[unit]
      row[f"concept_{j}"] = (results.concepts[out.concepts[unit, j]]
                             if used else "")
      row[f"weight_{j}"] = (round(float(out.weights[unit, j]), 6) if used
                            else "")
    row["bias"] = round(float(out.bias[unit]), 6)
    row["single_label"] = (results.concepts[labels[unit]]
                           if labels[unit] >= 0 else "")
    row["single_correlation"] = _float(single[unit])
    row["explanation"] = _text(row, width)
    rows.append(row)
  summary = {
      "layer": layer, "n_neurons": act.shape[1],
      "mean_correlation": _float(np.nanmean(out.correlation)),
      "mean_single_correlation": (_float(np.nanmean(single)) if has.any()
                                  else None),
      "mean_length": float(np.mean(out.lengths)),
      "presence_a": a, "presence_b": b,
      "presence_source": settings["presence_source"],
  }
  return rows, summary


def _text(row: dict, width: int) -> str:
  """'0.81*dog + 0.30*grass' (weights on the presence scale)."""
  terms = [f"{row[f'weight_{j}']:.3g}*{row[f'concept_{j}']}"
           for j in range(width) if row[f"concept_{j}"]]
  return " + ".join(terms).replace("+ -", "- ")


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  layers, settings = _check(results, config)
  rows, summaries = [], []
  for layer in layers:
    r, s = layer_rows(results, layer, settings)
    rows += r
    summaries.append(s)
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={
          "linear_explanations": results_lib.Table(
              rows, "Linear explanations per neuron (held-out correlation "
              "of the explanation and of the single label)", per_neuron=True,
              neuron_columns=("correlation", "single_correlation",
                              "explanation")),
          "linear_explanations_summary": results_lib.Table(
              summaries, "Linear explanations per layer", json=True),
      },
      summary=[f"{s['layer']}: mean held-out correlation "
               f"{s['mean_correlation']} (single label "
               f"{s['mean_single_correlation']}), mean length "
               f"{s['mean_length']:.2f}" for s in summaries])
