"""Bootstrap and top_k stability of the labels (only the kernel re-runs).

Usage:
  python scripts/stability.py --results_dir=results/rn50 --num_resamples=20 \
      --seed=0 --layers=layer4,fc

Writes stability.csv (per neuron) and stability_summary.csv/.json to
--out_dir (default <results_dir>/analysis); make_report.py shows them.
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from jax_dissect import results_dir
from jax_dissect import script_errors
from jax_dissect import stability

_RESULTS = flags.DEFINE_string("results_dir", None, "describe_neurons output.")
_LAYERS = flags.DEFINE_list("layers", [], "Layers (default: all).")
_B = flags.DEFINE_integer("num_resamples", 20, "Bootstrap resamples B.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the resampling key.")
_CONF = flags.DEFINE_float("confidence", 0.95, "Coverage of the score CI.")
_TOP_KS = flags.DEFINE_list(
    "top_ks", [str(t) for t in stability.DEFAULT_TOP_KS],
    "top_k values to try (soft_wpmi, wpmi).")
_OUT = flags.DEFINE_string("out_dir", None,
                           "Output dir (default <results_dir>/analysis).")
flags.mark_flag_as_required("results_dir")


def main(argv):
  del argv
  results = results_dir.load_results(_RESULTS.value)
  rows, summaries = stability.results_stability(
      results, _LAYERS.value or None, num_resamples=_B.value,
      seed=_SEED.value, confidence=_CONF.value,
      top_ks=[int(t) for t in _TOP_KS.value])
  paths = stability.write_stability(
      rows, summaries, results_dir.analysis_dir(results, _OUT.value))
  for s in summaries:
    logging.info("%s: mean agreement %.3f, stable fraction %.3f", s["layer"],
                 s["mean_agreement"], s["stable_fraction"])
  logging.info("wrote %s", paths)


if __name__ == "__main__":
  app.run(script_errors.one_line_errors(main))
