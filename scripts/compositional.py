"""Compositional "c1 c2" concepts of chosen neurons (paper section 4.6).

  python scripts/compositional.py --results_dir=results/rn50 --layer=layer4 \
      --units=12,345 --num_singles=100 --top_n=5

The same as `scripts/analyze.py --analysis=compositional`
(jax_dissect/analyses/compositional/ lists the options).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:compositional")
