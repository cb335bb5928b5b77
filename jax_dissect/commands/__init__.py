"""Command-line entry points: `jax-dissect <command>` and scripts/*.py.

  jax-dissect describe --config=configs/resnet50_imagenet.py:smoke
  jax-dissect analyze --analysis=stability --results_dir=results/rn50
  jax-dissect stability --results_dir=results/rn50    # an analysis by name
  jax-dissect report --results_dir=results/rn50
  jax-dissect convert --model=resnet50 --output=checkpoints/resnet50

Each command is a module here with absl flags and a `main(argv)`; the scripts in
scripts/ are thin `app.run` wrappers over the same modules. Only these entry
points touch the process environment (`common.setup_environment`) and call
jax.distributed.initialize; importing the library never does.
"""

from __future__ import annotations

import sys

COMMANDS = ("describe", "analyze", "report", "convert", "compare",
            "reproduce", "series")


def main() -> None:
  """The `jax-dissect` console script."""
  from jax_dissect import analyses  # pylint: disable=g-import-not-at-top
  usage = (f"usage: jax-dissect {{{','.join(COMMANDS)},"
           f"{','.join(analyses.names())}}} [flags] (--help for each)")
  if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help", "help"):
    print(usage)
    sys.exit(0 if len(sys.argv) >= 2 else 2)
  command, rest = sys.argv[1], sys.argv[2:]
  prog = f"jax-dissect {command}"
  if command == "describe":
    from jax_dissect.commands import describe  # pylint: disable=g-import-not-at-top
    describe.run([prog, *rest])
  elif command == "report":
    from jax_dissect.commands import report  # pylint: disable=g-import-not-at-top
    report.run([prog, *rest])
  elif command == "convert":
    from jax_dissect.commands import convert  # pylint: disable=g-import-not-at-top
    convert.run([prog, *rest])
  elif command == "compare":
    from jax_dissect.commands import compare  # pylint: disable=g-import-not-at-top
    compare.run([prog, *rest])
  elif command == "reproduce":
    from jax_dissect.commands import reproduce  # pylint: disable=g-import-not-at-top
    reproduce.run([prog, *rest])
  elif command == "series":
    from jax_dissect.commands import series  # pylint: disable=g-import-not-at-top
    series.run([prog, *rest])
  elif command == "analyze":
    from jax_dissect.commands import analyze  # pylint: disable=g-import-not-at-top
    analyze.run([prog, *rest])
  elif command in analyses.names():
    from jax_dissect.commands import analyze  # pylint: disable=g-import-not-at-top
    analyze.run([prog, *rest], analysis=command)
  else:
    sys.exit(f"error: unknown command {command!r}\n{usage}")
