"""Correlates weights between two layers with their labels' similarity.

  python scripts/weight_analysis.py --results_dir=results/rn50 \
      --layer_in=layer4 --layer_out=fc --top_n=1000

The same as `scripts/analyze.py --analysis=weights`
(jax_dissect/analyses/weights/ lists the options).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:weights")
