"""Scores every label of a run: simulation scores and permutation p-values.

  python scripts/score_explanations.py --results_dir=results/rn50 \
      --num_permutations=100 --split=half

Writes <results_dir>/analysis/explanation_scores.csv (layer, unit,
description, correlation, spearman, auprc, p_value, q_value) and
explanation_scores_summary.csv (per layer). The same as
`scripts/analyze.py --analysis=scoring` (jax_dissect/analyses/scoring/
lists the options).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:scoring")
