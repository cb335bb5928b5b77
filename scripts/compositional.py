"""Compositional "c1 c2" concepts of chosen neurons (paper section 4.6).

Usage:
  python scripts/compositional.py --results_dir=results/rn50 --layer=layer4 \
      --units=12,345 --num_singles=100 --top_n=5

Pairs of each unit's top single concepts are embedded with CLIP's text tower
(--clip_model, default the run's). Writes compositional.csv to --out_dir
(default <results_dir>/analysis) and logs the best pairs.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from jax_dissect import compositional
from jax_dissect import results_dir
from jax_dissect import script_errors
from jax_dissect import text_embed

_RESULTS = flags.DEFINE_string("results_dir", None, "describe_neurons output.")
_LAYER = flags.DEFINE_string("layer", None, "Layer of the units.")
_UNITS = flags.DEFINE_list("units", None, "Units (neuron indices).")
_SINGLES = flags.DEFINE_integer("num_singles", 100,
                                "Top single concepts to combine.")
_TOP_N = flags.DEFINE_integer("top_n", 5, "Best pairs to report.")
_CLIP = flags.DEFINE_enum("clip_embedder", "clip",
                          text_embed.EMBEDDER_KINDS[:3],
                          "Embedder of the pair texts.")
_CLIP_MODEL = flags.DEFINE_string("clip_model", None,
                                  "CLIP hub id or dir (default: the run's).")
_EMBED_FN = flags.DEFINE_string(
    "text_embed_fn", None, "module:function, a custom CLIP-space embedder "
    "used instead of --clip_embedder.")
_OUT = flags.DEFINE_string("out_dir", None,
                           "Output dir (default <results_dir>/analysis).")
flags.mark_flags_as_required(["results_dir", "layer", "units"])


def main(argv):
  del argv
  results = results_dir.load_results(_RESULTS.value)
  rows = compositional.results_compositional(
      results, _LAYER.value, [int(u) for u in _UNITS.value],
      (text_embed.import_callable(_EMBED_FN.value) if _EMBED_FN.value else
       text_embed.make_text_embedder(_CLIP.value, results, _CLIP_MODEL.value)),
      num_singles=_SINGLES.value, top_n=_TOP_N.value)
  path = compositional.write_compositional(
      rows, results_dir.analysis_dir(results, _OUT.value))
  for r in rows:
    logging.info("unit %d: single %r (%.4f), best pair %r (%.4f)", r["unit"],
                 r["single_label"], r["single_score"], r["best_pair"],
                 r["best_pair_score"])
  logging.info("wrote %s", path)


if __name__ == "__main__":
  app.run(script_errors.one_line_errors(main))
