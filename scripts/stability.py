"""Bootstrap and top_k stability of the labels (only the kernel re-runs).

  python scripts/stability.py --results_dir=results/rn50 --num_resamples=20 \
      --seed=0 --layers=layer4,fc

The same as `scripts/analyze.py --analysis=stability`
(jax_dissect/analyses/stability/ lists the options).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:stability")
