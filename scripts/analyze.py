"""Runs one analysis of a describe_neurons run (jax_dissect.analyses).

  python scripts/analyze.py --analysis=stability --results_dir=results/rn50
  python scripts/analyze.py --analysis=NAME --help      # its options

The same command as `jax-dissect analyze` (jax_dissect/commands/analyze.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analyze")
