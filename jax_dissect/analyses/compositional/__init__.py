"""Compositional "c1 c2" concepts of chosen neurons (paper section 4.6).

  python scripts/analyze.py --analysis=compositional \
      --results_dir=results/rn50 --layer=layer4 --units=12,345 \
      --num_singles=100 --top_n=5

For each chosen neuron, every ordered pair of its `num_singles` best single
concepts is embedded with CLIP's text tower (the run's CLIP by default) and
scored with the singles by the run's kernel over the whole layer. Writes
compositional.csv: one line per (neuron, pair rank).
"""

from __future__ import annotations

import ml_collections

from jax_dissect.analyses.compositional import pairs as compositional_lib
from jax_dissect.analyses.compositional.pairs import compositional_concepts
from jax_dissect.analyses.compositional.pairs import memory_estimate
from jax_dissect.analyses.compositional.pairs import ordered_pairs
from jax_dissect.clip import text_embed
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "compositional_concepts", "DESCRIPTION", "get_config", "memory_estimate",
    "NAME", "ordered_pairs", "run",
]

NAME = "compositional"
DESCRIPTION = "Best two-concept labels of chosen neurons."


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layer = ""  # Layer of the units (required).
  c.units = ()  # Units (neuron indices) to describe (required).
  c.num_singles = 100  # Top single concepts to combine (the paper's 100).
  c.top_n = 5  # Best pairs to report per unit.
  text_embed.add_options(c, "clip")  # Embedder of the pair texts.
  return c


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  if not config.layer:
    raise ValueError("layer is required: the layer of the units")
  layer = results.check_layer(config.layer)
  num_neurons = len(results.layer_neurons(layer))
  units = options.integers("units", config.units, minimum=0,
                           maximum=num_neurons - 1)
  if not units:
    raise ValueError("units is required: the neurons to describe, e.g. "
                     "units=12,345")
  num_singles = options.integer("num_singles", config.num_singles, minimum=2,
                                maximum=len(results.concepts))
  top_n = options.integer("top_n", config.top_n, minimum=1)
  image_embeddings = results.image_embeddings()
  # Refuse a run the machine cannot hold rather than be killed by the OOM
  # killer hours in.
  compositional_lib.check_memory(
      image_embeddings.shape[0], num_neurons, num_singles,
      image_embeddings.shape[1],
      sum(map(len, results.concepts)) / len(results.concepts))
  fn = results.similarity_fn
  rows = compositional_lib.compositional_concepts(
      results.activations(layer), results.concept_activations(),
      image_embeddings, results.concepts, units,
      text_embed.from_options(config, results), similarity_fn=fn,
      kernel_kwargs=results.kernel_kwargs(fn), num_singles=num_singles,
      top_n=top_n, seed=results.seed)
  table = [{"layer": layer, "unit": r["unit"], "rank": rank,
            "pair": pair["concept"], "pair_similarity": pair["similarity"],
            "best_single": r["best_single"],
            "best_single_similarity": r["best_single_score"],
            "single_label": r["single_label"],
            "single_similarity": r["single_score"]}
           for r in rows for rank, pair in enumerate(r["pairs"])]
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={"compositional": results_lib.Table(
          table, "Compositional concepts (best pairs)")},
      summary=[f"unit {r['unit']}: single {r['single_label']!r} "
               f"({r['single_score']:.4f}), best pair {r['best_pair']!r} "
               f"({r['best_pair_score']:.4f})" for r in rows])
