"""`jax-dissect report` / scripts/make_report.py: the HTML report of a run.

  jax-dissect report --results_dir=results/smoke
  jax-dissect report --results_dir=results/rn50 --out=rn50.html --thumb_size=160

One self-contained HTML file (default <results_dir>/report.html): open it
in any browser, no server. Thumbnails of each neuron's top images come from
the run's own probe set (its folder, or the thumbnails describe saved for a
TFDS probe set); --image_root points elsewhere. What the analyses wrote
under <results_dir>/analysis is included: run them first to see them.
"""

from __future__ import annotations

from absl import flags

from jax_dissect.commands import common
from jax_dissect.commands import console

FLAGS = flags.FLAGS


@common.define_once
def define_flags() -> None:
  """Declares the command's flags (once)."""
  kw = {"module_name": common.FLAG_MODULE}
  flags.DEFINE_string("results_dir", None, "A results directory of describe "
                      "(required).", **kw)
  flags.DEFINE_string("out", None,
                      "HTML file (default <results_dir>/report.html).", **kw)
  flags.DEFINE_string(
      "image_root", None, "Directory the image ids are relative to (default: "
      "the run's own probe images, or its saved thumbnails).", **kw)
  flags.DEFINE_string("analysis_dir", None, "Analyses' outputs (default "
                      "<results_dir>/analysis).", **kw)
  flags.DEFINE_integer("num_thumbs", 5, "Top images shown per neuron in the "
                       "tables (the neuron page shows every saved one; 0: "
                       "none).", **kw)
  flags.DEFINE_integer("thumb_size", 128, "Thumbnail size in pixels (the "
                       "file grows with its square).", **kw)
  flags.DEFINE_list("layers", [], "Layers (default: all).", **kw)
  flags.DEFINE_string("title", None, "Page title.", **kw)


def help_notes() -> list[str]:
  return ["The page: a tab per layer (sortable, filterable; a click on a "
          "neuron opens its page), a tab per basis of per-unit analyses "
          "(e.g. sae:layer4), Charts, Tables and Analyses (the options "
          "each ran with). docs/report.md describes it."]


def main(argv) -> None:
  del argv
  if not FLAGS.results_dir:
    raise console.UsageError("--results_dir is required: a results "
                             "directory of jax-dissect describe")
  common.setup_environment()
  from jax_dissect import report  # pylint: disable=g-import-not-at-top
  path = report.build_report(
      FLAGS.results_dir, FLAGS.out, analysis_dir=FLAGS.analysis_dir,
      image_root=FLAGS.image_root, num_thumbs=FLAGS.num_thumbs,
      thumb_size=FLAGS.thumb_size, layers=FLAGS.layers or None,
      title=FLAGS.title)
  print(path)  # Only the path: job scripts read it.


def run(argv: list[str] | None = None) -> None:
  """Parses the flags and runs; exits with the command's status."""
  common.run_command(define_flags, main, argv)
