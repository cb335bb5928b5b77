"""Evaluation of a class layer's labels against class names (paper Tables 1, 3).

  python scripts/analyze.py --analysis=evaluate --results_dir=results/rn50 \
      --layer=fc --class_names=../shared/data/concepts/imagenet_labels.txt \
      --first_synonym --similarity_fns=all --text_embedder=cached+clip \
      --sentence_model=sentence-transformers/all-mpnet-base-v2

For a layer whose neuron k is class k (e.g. ResNet's fc): top-1/top-5
accuracy when the concept set holds the class names, and the mean cosine of
label and class name in CLIP's text space (cos_clip) and in a sentence
embedding space (cos_sentence). Every similarity function re-runs on the
run's cached A and P. Writes evaluation.csv/.json (one row per function) and
evaluation_neurons.csv.

  # Describe-and-Dissect's descriptions (analysis/dnd.csv) beside the run's:
  ... --descriptions=dnd

With descriptions (dnd: the dnd analysis' dnd.csv; or any CSV with layer,
unit, description[, label_2, label_3]) a row "dnd" scores them: top1 = the
best description is the class name, top3 = one of three is, cos_* as above;
where they cover only some neurons, the run's kernels are scored again on
those neurons alone ("<fn> (same units)") so the rows compare like with like.
A class's accuracy needs its name in the concept set; with some names
missing (Table 2: 267 of Places365's 365 classes are in Broden), top1 and
top5 are None and top1_present / top5_present are the accuracies over the
neurons whose class name is a concept (n_classes_in_concepts of them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from jax_dissect import similarity
from jax_dissect.analyses.evaluate import metrics as evaluate_lib
from jax_dissect.analyses.evaluate.metrics import class_name_ranks
from jax_dissect.analyses.evaluate.metrics import evaluate_descriptions
from jax_dissect.analyses.evaluate.metrics import evaluate_similarity
from jax_dissect.analyses.evaluate.metrics import label_cosines
from jax_dissect.analyses.evaluate.metrics import read_class_names
from jax_dissect.analyses.evaluate.metrics import read_descriptions
from jax_dissect.analyses.evaluate.metrics import top_k_accuracy
from jax_dissect.clip import text_embed
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "class_name_ranks", "DESCRIPTION", "evaluate_descriptions",
    "evaluate_layer", "evaluate_similarity", "get_config", "label_cosines",
    "NAME", "read_class_names", "read_descriptions", "run", "top_k_accuracy",
]

NAME = "evaluate"
DESCRIPTION = "A class layer's labels against its class names."


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layer = ""  # The class layer (default: the run's last layer).
  c.class_names = ""  # File of class names, one per line, in class order.
  c.first_synonym = False  # Keep the text before each name's first comma.
  c.similarity_fns = ()  # Kernels to compare, or ("all",); default the run's.
  text_embed.add_options(c, "cached+clip")  # cos_clip; "none" skips it.
  c.sentence_model = ""  # sentence-transformers model for cos_sentence.
  c.seed = ml_collections.config_dict.placeholder(int)  # rank_reorder's.
  # Open-vocabulary descriptions to score too: dnd (the dnd analysis'
  # dnd.csv) or a CSV with layer,unit,description[,label_2,label_3].
  c.descriptions = ""
  return c


def evaluate_layer(
    results: results_lib.Run, layer: str, class_names: Sequence[str],
    similarity_names: Sequence[str] | None = None,
    embedders: Mapping[str, text_embed.TextEmbedFn] | None = None,
    kernel_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None, top_ks: Sequence[int] = (1, 5),
    units: Sequence[int] | None = None, suffix: str = "",
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """Compares similarity functions on a class layer of a run.

  Each kernel re-runs on the cached A of `layer` and P; the run's own
  function uses the run's hyper-parameters, the others their defaults.

  Args:
    results: the run.
    layer: the layer whose neuron k is class k (e.g. "fc").
    class_names: the K class names in class-index order.
    similarity_names: kernels to compare; default the run's own.
    embedders: name -> text_embed_fn for the cos_<name> columns.
    kernel_overrides: kernel name -> hyper-parameters to override.
    seed: seed of rank_reorder's key (default: the run's seed).
    top_ks: accuracies to report.
    units: score only these neurons (default all).
    suffix: appended to each row's similarity_fn (e.g. " (same units)").

  Returns:
    (table, neuron_rows): one summary row per similarity function (keys
    similarity_fn, layer, n_neurons, top1, top5, cos_<name>, ...), and one
    row per neuron per function (similarity_fn, layer, unit, class_name,
    label, rank, score, cos_<name>).
  """
  names = list(similarity_names or [results.similarity_fn])
  for name in names:
    similarity.get_kernel(name)
  seed = results.seed if seed is None else seed
  results.check_layer(layer)
  if not results.concepts:
    raise ValueError(f"{results.path} has no concepts.txt; it is needed to "
                     "name the similarity columns")
  a = np.asarray(results.activations(layer), np.float32)
  p = np.asarray(results.concept_activations(), np.float32)
  if a.shape[1] != len(class_names):
    raise ValueError(f"layer {layer!r} has {a.shape[1]} neurons but "
                     f"{len(class_names)} class names were given")
  table, neuron_rows = [], []
  for name in names:
    kwargs = results.kernel_kwargs(name, (kernel_overrides or {}).get(name))
    logging.info("evaluate: %s on layer %s (%s)", name, layer, kwargs)
    sim = np.asarray(similarity.compute(name, a, p, seed=seed, **kwargs))
    kept = list(range(len(class_names))) if units is None else list(units)
    summary, per_neuron = evaluate_lib.evaluate_similarity(
        sim[kept], results.concepts, [class_names[u] for u in kept],
        embedders, top_ks)
    ranks = np.asarray(per_neuron["rank"])
    present = ranks >= 0
    for k in top_ks:
      summary[f"top{k}_present"] = (float(np.mean(ranks[present] < k))
                                    if present.any() else None)
    table.append({"similarity_fn": name + suffix, "layer": layer, **summary})
    for i, unit in enumerate(kept):
      row: dict[str, Any] = {"similarity_fn": name + suffix, "layer": layer,
                             "unit": unit}
      for key, values in per_neuron.items():
        v = values[i]
        row[key] = v.item() if isinstance(v, np.generic) else v
      neuron_rows.append(row)
  return table, neuron_rows


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  if not config.class_names:
    raise ValueError("class_names is required: a file of class names, one "
                     "per line in class-index order")
  layer = results.check_layer(config.layer or results.layers[-1])
  fns = options.names_list("similarity_fns", config.similarity_fns)
  if fns == ["all"]:
    fns = similarity.names()
  for name in fns:
    options.choice("similarity_fns", name, similarity.names() + ["all"])
  seed = None if config.seed is None else options.integer("seed",
                                                          config.seed)
  class_names = evaluate_lib.read_class_names(config.class_names,
                                              config.first_synonym)
  embedders = {}
  clip_fn = text_embed.from_options(config, results, allow_none=True)
  if clip_fn is not None:
    embedders["clip"] = clip_fn
  if config.sentence_model:
    embedders["sentence"] = text_embed.make_text_embedder(
        "sentence", model=config.sentence_model)
  described = None
  if config.descriptions:
    path = (os.path.join(results.analysis_dir(), "dnd.csv")
            if config.descriptions == "dnd" else config.descriptions)
    described = evaluate_lib.read_descriptions(path, layer)
  table, neuron_rows = evaluate_layer(results, layer, class_names,
                                      similarity_names=fns or None,
                                      embedders=embedders, seed=seed)
  if described is not None:
    summary, per_neuron = evaluate_lib.evaluate_descriptions(
        described, class_names, embedders)
    units = per_neuron["unit"]
    if len(units) < len(class_names):
      more, more_rows = evaluate_layer(
          results, layer, class_names, similarity_names=fns or None,
          embedders=embedders, seed=seed, units=units,
          suffix=" (same units)")
      table += more
      neuron_rows += more_rows
    table.append({"similarity_fn": "dnd", "layer": layer, **summary})
    for i, unit in enumerate(units):
      neuron_rows.append({"similarity_fn": "dnd", "layer": layer,
                          "unit": unit, **{
                              k: (v[i].item() if isinstance(v[i], np.generic)
                                  else v[i])
                              for k, v in per_neuron.items() if k != "unit"}})
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={
          "evaluation": results_lib.Table(
              table, "Evaluation against class names", json=True),
          "evaluation_neurons": results_lib.Table(
              neuron_rows, "Per-neuron evaluation", show=False),
      },
      summary=_matched_lines(results, config.class_names,
                             config.first_synonym, table)
      + evaluate_lib.format_table(table).splitlines())


def _matched_lines(results: results_lib.Run, class_names_file: str,
                   first_synonym: bool,
                   table: Sequence[Mapping[str, Any]]) -> list[str]:
  """How many class names are concepts of the run, and what to pass when
  some are not (top-k accuracy needs all of them)."""
  if not table:
    return []
  found, total = table[0]["n_classes_in_concepts"], table[0]["n_neurons"]
  lines = [f"class names: {found} of {total} are concepts of the run's "
           f"concept set ({results.config.get('concept_set', '?')})"]
  if found < total:
    names = class_names_file
    if first_synonym:  # The concepts must be the names as read here.
      names = "NAMES.txt (made by: cut -d, -f1 " + class_names_file + \
          " > NAMES.txt)"
    lines.append(
        f"top-1/top-5 need all {total}: run describe with --concept_set="
        f"{names} (or a concept set holding every class name); the cos_* "
        f"columns compare the labels with all {total} names")
  return lines
