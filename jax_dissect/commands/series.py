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

from absl import app
from absl import flags

from jax_dissect.commands import common
from jax_dissect.commands import describe as describe_command

_WEIGHTS = flags.DEFINE_list("weights", [], "The series' target weights, in "
                             "order (files, orbax directories, hub ids).",
                             module_name=common.flag_module())
_CKPT = flags.DEFINE_string("checkpoint_dir", None, "An orbax checkpoint "
                            "directory of steps (<dir>/<step>/), instead of "
                            "--weights.", module_name=common.flag_module())
_NAMES = flags.DEFINE_list("names", [], "A name per weights (default: file "
                           "names, or step_<n>).",
                           module_name=common.flag_module())
_COMPARE = flags.DEFINE_string("compare_out", None, "Compare the runs in "
                               "series order into this directory.",
                               module_name=common.flag_module())
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if any(FLAGS[f].present for f in ("coordinator_address", "num_processes",
                                    "process_id", "distributed")):
    raise ValueError("series runs in one process; the multi-process flags "
                     "are for jax-dissect describe")
  if bool(_WEIGHTS.value) == bool(_CKPT.value):
    raise ValueError("give the series' weights with either --weights "
                     "(a list) or --checkpoint_dir (orbax steps)")
  common.setup_environment()
  from jax_dissect.pipeline import series  # pylint: disable=g-import-not-at-top
  if _CKPT.value:
    weights = series.checkpoint_steps(_CKPT.value)
    if _NAMES.value:
      weights = series.weights_list([w for _, w in weights], _NAMES.value)
  else:
    weights = series.weights_list(_WEIGHTS.value, _NAMES.value or None)
  runs = series.describe_series(describe_command.config_from_flags(),
                                weights)
  for run in runs:
    print(run.path)
  if _COMPARE.value:
    from jax_dissect.analyses import _compare  # pylint: disable=g-import-not-at-top
    from jax_dissect.report import compare as page  # pylint: disable=g-import-not-at-top
    comparison = _compare.compare_runs(runs, [n for n, _ in weights])
    _compare.write_comparison(comparison, _COMPARE.value)
    for note in comparison.notes:
      print(f"note: {note}")
    print(page.build_compare_page(_COMPARE.value,
                                  run_dirs=[r.path for r in runs]))


def run(argv=None):
  app.run(common.one_line_errors(main), argv=argv,
          flags_parser=describe_command.parse_flags)
