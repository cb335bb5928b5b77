"""Runs a paper's table and sets it beside the published numbers.

  python scripts/reproduce.py --table=table3 --work_dir=repro

The same command as `jax-dissect reproduce` (jax_dissect/commands/reproduce.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect.commands import reproduce  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  reproduce.run()
