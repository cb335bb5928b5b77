"""One-line errors for the absl scripts: bad input is not a traceback."""

import functools
import sys
from collections.abc import Callable
from typing import Any


def one_line_errors(main: Callable[[list[str]], Any]
                    ) -> Callable[[list[str]], Any]:
  """Wraps an absl main so ValueError / FileNotFoundError / ImportError (bad
  flags, files or missing extras) exit with status 1 and one line
  `error: <message>` on stderr instead of a traceback."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except (ValueError, FileNotFoundError, ImportError) as e:
      sys.exit(f"error: {e}")

  return wrapped
