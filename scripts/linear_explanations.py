"""Linear explanations of a run's neurons (weighted sums of concepts).

  python scripts/linear_explanations.py --results_dir=results/rn50 \
      --layer=layer4 --max_length=10

The same as `scripts/analyze.py --analysis=linear_explanations`
(jax_dissect/analyses/linear_explanations/ lists the options).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:linear_explanations")
