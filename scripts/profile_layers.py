"""Layer-wise network profile: label categories and interpretable fraction.

  python scripts/profile_layers.py --results_dir=results/rn50 \
      --categorizer=clip            # CLIP zero-shot on the label text
  python scripts/profile_layers.py --results_dir=results/rn50 \
      --categorizer=table --category_table=broden_categories.tsv

The same as `scripts/analyze.py --analysis=profile`
(jax_dissect/analyses/profile/ lists the options).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:profile")
