"""Command-line entry points: `jax-dissect <command>` and scripts/*.py.

  jax-dissect --help                                  # every command
  jax-dissect describe --config=resnet18_cifar100:smoke --result_dir=results/smoke
  jax-dissect stability --results_dir=results/smoke   # an analysis by name
  jax-dissect analyze --analysis=stability --results_dir=results/smoke
  jax-dissect report --results_dir=results/smoke
  jax-dissect convert --model=resnet50 --output=checkpoints/resnet50

Each command is a module here (`define_flags`, `help_notes`, `run(argv)`);
the scripts in scripts/ run the same commands (`run_script`). `--help` is
answered before a command module is imported (commands/help.py), so it
never waits for jax. Only these entry points touch the process environment
(`common.setup_environment`) and call jax.distributed.initialize;
importing the library never does. Output and exit status: console.py.
"""

from __future__ import annotations

import importlib
import os
import sys

from jax_dissect.commands import console
from jax_dissect.commands import help as help_lib

COMMANDS = tuple(help_lib.COMMANDS)


def command_key(command: str) -> str:
  """The help/run key of `command`: a command, or `analysis:<name>`.

  Raises:
    console.UsageError: an unknown command, listing the commands.
  """
  if command in help_lib.COMMANDS:
    return command
  if command in help_lib.analysis_names():
    return f"analysis:{command}"
  raise console.UsageError(
      f"unknown command {command!r}; commands: {', '.join(COMMANDS)}; "
      f"analyses: {', '.join(help_lib.analysis_names())} (jax-dissect "
      "--help)")


def _analysis_arg(args: list[str]) -> str | None:
  for i, arg in enumerate(args):
    if arg.startswith(("--analysis=", "-analysis=")):
      return arg.split("=", 1)[1]
    if arg in ("--analysis", "-analysis") and i + 1 < len(args):
      return args[i + 1]
  return None


def run(key: str, args: list[str], prog: str) -> None:
  """Runs command `key` with `args` (exits with its status).

  `--help` prints the command's help and exits 0 without importing it.
  """
  if help_lib.is_help(args):
    if key == "analyze" and _analysis_arg(args):
      name = _analysis_arg(args)
      if name not in help_lib.analysis_names():
        raise console.UsageError(
            f"unknown analysis {name!r}; allowed: "
            f"{', '.join(help_lib.analysis_names())}")
      key, prog = f"analysis:{name}", f"{prog} --analysis={name}"
    sys.stdout.write(help_lib.command_help(key, prog))
    sys.stdout.flush()
    sys.exit(console.EXIT_OK)
  argv = [prog, *args]
  if key.startswith("analysis:"):
    analyze = importlib.import_module("jax_dissect.commands.analyze")
    analyze.run(argv, analysis=key.split(":", 1)[1])
  else:
    importlib.import_module(f"jax_dissect.commands.{key}").run(argv)


def _dispatch(args: list[str]) -> None:
  prog = "jax-dissect"
  if not args or args[0] in ("-h", "--help", "-help", "--helpfull", "help"):
    if len(args) > 1 and args[0] == "help":
      run(command_key(args[1]), ["--help"], f"{prog} {args[1]}")
    sys.stdout.write(help_lib.top_help(prog))
    sys.stdout.flush()
    # `jax-dissect` alone is a usage error (no command); --help is not.
    sys.exit(console.EXIT_OK if args else console.EXIT_USAGE)
  if args[0] in ("--version", "version"):
    import jax_dissect  # pylint: disable=g-import-not-at-top
    print(f"jax_dissect {jax_dissect.__version__}")
    sys.exit(console.EXIT_OK)
  run(command_key(args[0]), args[1:], f"{prog} {args[0]}")


def main(argv: list[str] | None = None) -> None:
  """The `jax-dissect` console script (and `python -m jax_dissect`)."""
  args = list(sys.argv[1:] if argv is None else argv)
  console.guarded(lambda: _dispatch(args))


def run_script(key: str, argv: list[str] | None = None) -> None:
  """A script of scripts/ (`python scripts/X.py --flags`): command `key`,
  named by the script in help and errors."""
  argv = list(sys.argv if argv is None else argv)
  prog = os.path.basename(argv[0])
  console.guarded(lambda: run(key, argv[1:], prog))
