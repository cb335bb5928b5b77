"""Writes the self-contained HTML report of a results directory.

  python scripts/make_report.py --results_dir=results/rn50 \
      --image_root=/data/imagenet/val --out=results/rn50/report.html

The same command as `jax-dissect report` (jax_dissect/commands/report.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("report")
