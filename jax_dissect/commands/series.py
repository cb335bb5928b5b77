"""`jax-dissect series`: describe_neurons over a series of checkpoints.

  jax-dissect series --config=configs/resnet18_cifar100.py \
      --checkpoint_dir=ckpts --result_dir=results/series \
      --compare_out=results/series/compare
  jax-dissect series --config=... --weights=a.safetensors,b.safetensors \
      --names=epoch1,epoch10 --result_dir=results/series

Every describe flag (--config, --config.<name>=..., --target_model, ...)
sets the shared options; the series' weights come from --weights (a list)
or --checkpoint_dir (orbax steps <dir>/<step>/, in step order). Run i goes
to <result_dir>/<name_i>. CLIP is loaded once and P computed once; each
checkpoint computes its own activations and labels. With --compare_out the
runs are then compared in series order (jax-dissect compare: profiles,
agreement with the previous checkpoint, the trend chart, compare.html).
"""

from __future__ import annotations

import sys

from absl import flags

from jax_dissect.commands import common
from jax_dissect.commands import console
from jax_dissect.commands import describe as describe_command

_FLAGS = (
    ("list", "weights", [], "The series' target weights, in order (files, "
     "orbax directories, hub ids)."),
    ("string", "checkpoint_dir", None, "An orbax checkpoint directory of "
     "steps (<dir>/<step>/), instead of --weights."),
    ("list", "names", [], "A name per weights (default: file names, or "
     "step_<n>)."),
    ("string", "compare_out", None, "Compare the runs in series order into "
     "this directory."),
)


define_flags = common.flag_table_definer(_FLAGS)


def help_notes() -> list[str]:
  return []


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if any(FLAGS[f].present for f in ("coordinator_address", "num_processes",
                                    "process_id", "distributed")):
    raise ValueError("series runs in one process; the multi-process flags "
                     "are for jax-dissect describe")
  if bool(FLAGS.weights) == bool(FLAGS.checkpoint_dir):
    raise ValueError("give the series' weights with either --weights "
                     "(a list) or --checkpoint_dir (orbax steps)")
  common.setup_environment()
  from jax_dissect.pipeline import series  # pylint: disable=g-import-not-at-top
  if FLAGS.checkpoint_dir:
    weights = series.checkpoint_steps(FLAGS.checkpoint_dir)
    if FLAGS.names:
      weights = series.weights_list([w for _, w in weights], FLAGS.names)
  else:
    weights = series.weights_list(FLAGS.weights, FLAGS.names or None)
  runs = series.describe_series(describe_command.config_from_flags(),
                                weights)
  for run in runs:
    print(run.path)
  if FLAGS.compare_out:
    from jax_dissect.analyses import _compare  # pylint: disable=g-import-not-at-top
    from jax_dissect.report import compare as page  # pylint: disable=g-import-not-at-top
    comparison = _compare.compare_runs(runs, [n for n, _ in weights])
    _compare.write_comparison(comparison, FLAGS.compare_out)
    for note in comparison.notes:
      print(f"note: {note}")
    print(page.build_compare_page(FLAGS.compare_out,
                                  run_dirs=[r.path for r in runs]))


def run(argv: list[str] | None = None) -> None:
  """Parses the flags and runs; exits with the command's status."""
  argv = list(sys.argv if argv is None else argv)

  def go():
    describe_command.define_flags()
    define_flags()
    describe_command.parse_flags(argv)
    console.setup_output(argv)
    main(argv)

  console.guarded(go)
