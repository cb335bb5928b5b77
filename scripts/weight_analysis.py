"""Correlates weights between two layers with their labels' similarity.

Usage:
  python scripts/weight_analysis.py --results_dir=results/rn50 \
      --layer_in=layer4 --layer_out=fc --weights=fc_kernel.npy --top_n=1000

--weights is a .npy (or .npz with --weights_key) kernel in Flax layout
(in, out) or (kh, kw, in, out); --transpose_torch takes PyTorch's (out, in)
or (out, in, kh, kw). Writes weights_<in>_<out>.json/.png to --out_dir
(default <results_dir>/analysis).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from jax_dissect import results_dir
from jax_dissect import script_errors
from jax_dissect import text_embed
from jax_dissect import weights

_RESULTS = flags.DEFINE_string("results_dir", None, "describe_neurons output.")
_IN = flags.DEFINE_string("layer_in", None, "Earlier layer, e.g. layer4.")
_OUT_LAYER = flags.DEFINE_string("layer_out", None, "Next layer, e.g. fc.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Kernel file (.npy/.npz).")
_KEY = flags.DEFINE_string("weights_key", None, "Array name in an .npz.")
_TORCH = flags.DEFINE_bool("transpose_torch", False,
                           "The kernel is in PyTorch layout.")
_REDUCE = flags.DEFINE_enum("reduce", "mean", weights.REDUCTIONS,
                            "Spatial reduction of conv kernels.")
_TOP_N = flags.DEFINE_integer("top_n", 1000, "Strongest-weight subset size.")
_BY_ABS = flags.DEFINE_bool("by_abs", False, "Rank the subset by |w|.")
_EMBEDDER = flags.DEFINE_enum("embedder", "cached",
                              text_embed.EMBEDDER_KINDS,
                              "Label text embedder (cached = the run's CLIP "
                              "text embeddings of the concept set).")
_MODEL = flags.DEFINE_string("model", None,
                             "CLIP/sentence model for --embedder.")
_EMBED_FN = flags.DEFINE_string(
    "text_embed_fn", None, "module:function, a custom embedder used instead "
    "of --embedder.")
_OUT = flags.DEFINE_string("out_dir", None,
                           "Output dir (default <results_dir>/analysis).")
flags.mark_flags_as_required(["results_dir", "layer_in", "layer_out",
                              "weights"])


def main(argv):
  del argv
  results = results_dir.load_results(_RESULTS.value)
  w = weights.load_weights(_WEIGHTS.value, _KEY.value)
  if _TORCH.value:
    w = np.transpose(w, (1, 0) if w.ndim == 2 else (2, 3, 1, 0))
  summary = weights.results_weight_analysis(
      results, _IN.value, _OUT_LAYER.value, w,
      (text_embed.import_callable(_EMBED_FN.value) if _EMBED_FN.value else
       text_embed.make_text_embedder(_EMBEDDER.value, results, _MODEL.value)),
      top_n=_TOP_N.value, by_abs=_BY_ABS.value, reduce=_REDUCE.value,
      out_dir=results_dir.analysis_dir(results, _OUT.value))
  logging.info("all weights: r=%.4f p=%.3g (n=%d); top %d: r=%.4f p=%.3g",
               summary["r"], summary["p_value"], summary["n"],
               summary["top_n"], summary["r_top"], summary["p_value_top"])
  logging.info("wrote %s and %s", summary["json"], summary["png"])


if __name__ == "__main__":
  app.run(script_errors.one_line_errors(main))
