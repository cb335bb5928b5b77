"""`jax-dissect report` / scripts/make_report.py: the HTML report of a run.

  python scripts/make_report.py --results_dir=results/rn50 \
      --image_root=/data/imagenet/val --out=results/rn50/report.html

Open the file in any browser (no server). What the analyses wrote under
<results_dir>/analysis is included; run them first to see them.
"""

from __future__ import annotations

from absl import app
from absl import flags

from jax_dissect.commands import common

_RESULTS = flags.DEFINE_string("results_dir", None, "describe_neurons output.",
    module_name=common.flag_module())
_OUT = flags.DEFINE_string("out", None,
                           "HTML file (default <results_dir>/report.html).",
    module_name=common.flag_module())
_ROOT = flags.DEFINE_string(
    "image_root", None, "Directory the image ids are relative to (default: "
    "ids are paths).",
    module_name=common.flag_module())
_ANALYSIS = flags.DEFINE_string(
    "analysis_dir", None, "Analyses' outputs (default "
    "<results_dir>/analysis).",
    module_name=common.flag_module())
_THUMBS = flags.DEFINE_integer("num_thumbs", 5,
                               "Top images shown per neuron (0: none).",
    module_name=common.flag_module())
_SIZE = flags.DEFINE_integer("thumb_size", 96, "Thumbnail size in pixels.",
    module_name=common.flag_module())
_LAYERS = flags.DEFINE_list("layers", [], "Layers (default: all).",
    module_name=common.flag_module())
_TITLE = flags.DEFINE_string("title", None, "Page title.",
    module_name=common.flag_module())
flags.mark_flag_as_required("results_dir")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  common.setup_environment()
  from jax_dissect import report  # pylint: disable=g-import-not-at-top
  path = report.build_report(
      _RESULTS.value, _OUT.value, analysis_dir=_ANALYSIS.value,
      image_root=_ROOT.value, num_thumbs=_THUMBS.value,
      thumb_size=_SIZE.value, layers=_LAYERS.value or None, title=_TITLE.value)
  print(path)


def run(argv=None):
  app.run(common.one_line_errors(main), argv=argv)
