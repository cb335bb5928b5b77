"""Backbone comparison: a run's layers labelled with other CLIP / SigLIP
backbones.

  python scripts/analyze.py --analysis=backbones --results_dir=results/rn50 \
      --backbones=google/siglip-base-patch16-224,/models/openclip-b16 \
      --linear_explanations --class_names=../shared/data/concepts/imagenet_labels.txt

Each backbone (a hub id or local directory of a CLIP or SigLIP checkpoint,
the architecture read from its config.json) computes P on the run's probe
images and concepts (clip.cached: the keys describe_neurons uses, so P is
computed once per backbone and shared with runs of that backbone), and
the run's cached activations are labelled with it by the run's similarity
function (jax_dissect.analyses.backbones.compare). Per backbone and layer,
the run's own backbone first: agreement with the run's labels, mean
held-out simulation correlation (each backbone with its own presence
parameters, documented or fitted to its P), the linear explanations' mean
correlation when asked, and the class layer's top-1 when class names are
given and all in the concept set. Writes backbones.csv/.json, a chart,
backbone_labels.csv (each neuron's label under each backbone, shown
beside the run's label) and backbones_info.json (what each backbone was,
its presence parameters, where its P is).
"""

from __future__ import annotations

import os
import re
from typing import Any

from absl import logging
import ml_collections

from jax_dissect import clip
from jax_dissect.analyses import scoring as scoring_analysis
from jax_dissect.analyses.backbones import compare
from jax_dissect.analyses.backbones.compare import label_layer
from jax_dissect.analyses.backbones.compare import layer_row
from jax_dissect.analyses.backbones.compare import Settings
from jax_dissect.analyses.evaluate import metrics as evaluate_lib
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.clip import cached
from jax_dissect.data import concepts as concepts_lib
from jax_dissect.data import probes
from jax_dissect.runtime import options
from jax_dissect.runtime import precision
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import results as results_lib

__all__ = ["DESCRIPTION", "get_config", "label_layer", "layer_row", "NAME",
           "run", "Settings"]

NAME = "backbones"
DESCRIPTION = ("The run's layers labelled with other CLIP / SigLIP "
               "backbones: agreement, simulation correlation, linear "
               "explanations and top-1 per backbone and layer.")
TABLE = "backbones"
LABELS_TABLE = "backbone_labels"
INFO = "backbones_info"


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # Backbones to compare with the run's own: hub ids or local directories
  # of CLIP or SigLIP checkpoints.
  c.backbones = ()
  c.layers = ()  # Layers to compare (default: all).
  c.split = "half"  # Held-out images: half, all, or a fraction in (0, 1).
  c.seed = 0  # Seed of the held-out split.
  c.linear_explanations = False  # Also fit linear explanations per backbone.
  c.max_length = 5  # Most concepts per linear explanation.
  # Class names of the class layer, one per line in unit order: its top-1
  # per backbone when every name is a concept.
  c.class_names = ""
  c.first_synonym = False  # Keep the text before each class name's comma.
  c.class_layer = ""  # The class layer (default: the run's last layer).
  c.batch_size = 0  # Images and texts per device per call (0: the run's).
  c.compute_dtype = ""  # The backbones' forward passes ("": the run's).
  return c


def _check(run: results_lib.Run, config) -> tuple[list[str], list[str],
                                                  Settings, int, str]:
  """(backbones, layers, settings, batch size, compute dtype); one-line
  ValueErrors / ClipLoadErrors before any model is loaded."""
  backbones = list(dict.fromkeys(
      options.names_list("backbones", config.backbones)))
  if not backbones:
    raise ValueError("backbones is empty: name the CLIP or SigLIP "
                     "checkpoints (hub ids or local directories) to compare "
                     "with the run's, e.g. --backbones=google/siglip-base-"
                     "patch16-224")
  if "random" in backbones:
    raise ValueError("backbones takes hub ids or local directories; a random "
                     "CLIP ('random') can only be the run's own backbone")
  layers = options.names_list("layers", config.layers) or run.layers
  for layer in layers:
    run.check_layer(layer)
  if not run.concepts:
    raise ValueError(f"{run.path} has no concepts.txt; it is needed to label "
                     "with another backbone")
  class_layer, class_names = "", ()
  if config.class_names:
    class_layer = run.check_layer(config.class_layer or run.layers[-1])
    class_names = tuple(evaluate_lib.read_class_names(
        config.class_names, config.first_synonym))
    compare.check_class_names(run, class_layer, class_names)
  split = scoring_analysis.parse_split(config.split)
  seed = options.integer("seed", config.seed)
  scoring.split_indices(len(run.image_ids) or 10**6, split, seed)
  settings = Settings(
      split=split, seed=seed,
      linear_explanations=options.choice(
          "linear_explanations", config.linear_explanations, (False, True)),
      max_length=options.integer("max_length", config.max_length, minimum=1),
      class_layer=class_layer, class_names=class_names)
  batch_size = options.integer("batch_size", config.batch_size, minimum=0)
  batch_size = batch_size or int(run.config.get("batch_size") or 64)
  dtype = precision.check(config.compute_dtype or run.config.get(
      "compute_dtype") or precision.DEFAULT)
  for name in backbones:  # Architecture and tokenizer files, before work.
    clip.check_backbone(name)
  return backbones, layers, settings, batch_size, dtype


def _column(name: str, taken: set[str]) -> str:
  """A per-neuron column name for a backbone's labels: "label:<last part
  of its name>", made unique."""
  base = re.sub(r"\s+", "_", os.path.basename(os.path.normpath(name)) or name)
  column, i = f"label:{base}", 2
  while column in taken:
    column, i = f"label:{base}#{i}", i + 1
  taken.add(column)
  return column


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  backbones, layers, settings, batch_size, dtype = _check(results, config)
  own_name = scoring.run_backbone(results.config) or "the run's given P"
  others = [b for b in backbones if b != own_name]
  if len(others) < len(backbones):
    logging.info("backbones: %s is the run's own backbone", own_name)
  probe = probes.run_probe_set(results)
  cache = cache_lib.ArrayCache(results.cache_dir())
  texts = concepts_lib.apply_template(results.concepts,
                                      results.config.get("prompt_template"))
  own_record = dict(results.config.get("backbone") or {})
  entries = [{"name": own_name, "own": True,
              "model_type": own_record.get("model_type", ""),
              "identity": own_record.get("identity", ""),
              "presence": scoring.run_presence_params(results),
              "p": results.concept_activations(),
              "p_path": results.arrays.get("concept_activations", "")}]
  for name in others:
    embedder = clip.load_backbone(name, compute_dtype=dtype)
    logging.info("backbones: P of %s (%s)", name, embedder.model_type)
    got = cached.concept_activations(
        cache, embedder, probe, texts, batch_size=batch_size,
        shard_images=int(results.config.get("shard_images") or 2048),
        p_dtype=results.config.get("p_dtype") or "float32",
        num_threads=int(results.config.get("num_threads") or 0))
    record = cached.describe(embedder)
    del embedder  # Its parameters are no longer needed.
    entries.append({**record, "own": False,
                    "presence": scoring.presence_params_for(name, got.p),
                    "p": got.p, "p_path": got.paths["concept_activations"]})

  rows, labels_by_layer = [], {}
  taken: set[str] = set()
  columns = {e["name"]: _column(e["name"], taken) for e in entries[1:]}
  for layer in layers:
    a = results.activations(layer)
    own = compare.run_labels(results, layer, a.shape[1])
    per_neuron = [{"layer": layer, "unit": k} for k in range(a.shape[1])]
    for entry in entries:
      logging.info("backbones: %s on layer %s", entry["name"], layer)
      labels = own if entry["own"] else label_layer(results, a, entry["p"])
      presence = entry["presence"]
      row = {"backbone": entry["name"], "model_type": entry["model_type"],
             **layer_row(results, layer, a, entry["p"], labels, own,
                         presence, settings),
             "presence_a": presence.a, "presence_b": presence.b,
             "presence_source": presence.source}
      rows.append(row)
      if not entry["own"]:
        for k, i in enumerate(labels):
          per_neuron[k][columns[entry["name"]]] = results.concepts[i]
    labels_by_layer[layer] = per_neuron
  info = [{key: (value.to_json() if key == "presence" else value)
           for key, value in e.items() if key != "p"} for e in entries]
  neuron_rows = [r for layer in layers for r in labels_by_layer[layer]]
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={
          TABLE: results_lib.Table(
              rows, "Backbones compared per layer: agreement with the run's "
              "labels, mean held-out simulation correlation (each backbone "
              "with its own P and presence parameters)"
              + (", linear explanations" if settings.linear_explanations
                 else "")
              + (f", top-1 of {settings.class_layer}"
                 if settings.class_names else ""), json=True),
          LABELS_TABLE: results_lib.Table(
              neuron_rows, "Each neuron's label under the other backbones",
              per_neuron=True, neuron_columns=tuple(columns.values())),
      },
      charts={TABLE: results_lib.Chart(
          lambda path: compare.plot(rows, path),
          "Per layer and backbone: mean held-out correlation of the labels "
          "and agreement with the run's labels")},
      documents={INFO: {"backbones": info, "layers": layers,
                        "split": settings.split, "seed": settings.seed}},
      summary=[_summary(r) for r in rows])


def _summary(row: dict[str, Any]) -> str:
  def fmt(x):
    return "n/a" if x is None else f"{x:.3f}"
  parts = [f"{row['backbone']} {row['layer']}: agreement "
           f"{fmt(row['agreement'])}, mean correlation "
           f"{fmt(row['mean_correlation'])}"]
  if "mean_linear_correlation" in row:
    parts.append(f"linear {fmt(row['mean_linear_correlation'])}")
  if "top1" in row:
    parts.append(f"top-1 {fmt(row['top1'])}")
  return ", ".join(parts)
