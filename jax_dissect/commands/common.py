"""What every entry point shares: where flags are declared, the process
environment set before the library loads transformers, one-line errors."""

from __future__ import annotations

from collections.abc import Callable
import functools
import os
import sys
from typing import Any

# Errors that mean bad input (flags, files, missing extras): one line, exit 1.
USER_ERRORS = (ValueError, OSError, ImportError)


def flag_module() -> str:
  """The module name flags are declared under so that --help lists them.

  absl's --help shows the flags of the main module, sys.argv[0]; the
  commands declare their flags in this package, so they name that module.
  """
  return sys.argv[0]


def setup_environment(needs_torch: bool = False) -> None:
  """What the entry points set before the library loads transformers.

  USE_TORCH=0 keeps transformers from importing PyTorch (seconds, and
  nothing jax_dissect needs) unless the command needs it (a
  sentence-transformers model); a value the user set is kept.
  """
  os.environ.setdefault("USE_TORCH", "1" if needs_torch else "0")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def one_line_errors(main: Callable[[list[str]], Any]
                    ) -> Callable[[list[str]], Any]:
  """Wraps an absl main so bad input exits 1 with one `error: ...` line."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS as e:
      sys.exit(f"error: {e}")

  return wrapped
