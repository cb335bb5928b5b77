"""Compares two or more describe_neurons runs (or a series of checkpoints).

  python scripts/compare.py --results_dirs=results/a,results/b \
      --out_dir=results/compare

The same command as `jax-dissect compare` (jax_dissect/commands/compare.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect.commands import compare  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  compare.run()
