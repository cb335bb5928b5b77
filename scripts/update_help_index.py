"""Rewrites jax_dissect/commands/help_index.json: every command's --help.

  python scripts/update_help_index.py

Run it after changing a command's flags, an analysis' options or
describe's defaults (tests/commands/test_help.py says when): `--help` reads
the index so that it never imports jax; a command whose sources changed
since the index was written gets its help the slow way (commands/help.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect.commands import help as help_lib  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  print(help_lib.write_index())
