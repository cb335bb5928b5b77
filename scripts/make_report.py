"""Writes the self-contained HTML report of a results directory.

Usage:
  python scripts/make_report.py --results_dir=results/rn50 \
      --image_root=/data/imagenet/val --out=results/rn50/report.html

Open the file in any browser (no server). Analyses found in
<results_dir>/analysis (stability, profile, weights, evaluation) are
included; run them first to see them.
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top
from jax_dissect import report
from jax_dissect import script_errors

_RESULTS = flags.DEFINE_string("results_dir", None, "describe_neurons output.")
_OUT = flags.DEFINE_string("out", None,
                           "HTML file (default <results_dir>/report.html).")
_ROOT = flags.DEFINE_string(
    "image_root", None, "Directory the image ids are relative to (default: "
    "ids are paths).")
_ANALYSIS = flags.DEFINE_string(
    "analysis_dir", None, "Analyses' outputs (default "
    "<results_dir>/analysis).")
_THUMBS = flags.DEFINE_integer("num_thumbs", 5,
                               "Top images shown per neuron (0: none).")
_SIZE = flags.DEFINE_integer("thumb_size", 96, "Thumbnail size in pixels.")
_LAYERS = flags.DEFINE_list("layers", [], "Layers (default: all).")
_TITLE = flags.DEFINE_string("title", None, "Page title.")
flags.mark_flag_as_required("results_dir")


def main(argv):
  del argv
  path = report.build_report(
      _RESULTS.value, _OUT.value, analysis_dir=_ANALYSIS.value,
      image_root=_ROOT.value, num_thumbs=_THUMBS.value,
      thumb_size=_SIZE.value, layers=_LAYERS.value or None, title=_TITLE.value)
  print(path)


if __name__ == "__main__":
  app.run(script_errors.one_line_errors(main))
