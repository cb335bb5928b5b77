"""Evaluates a class layer's labels against class names (paper Tables 1, 3).

  python scripts/evaluate.py --results_dir=results/rn50 --layer=fc \
      --class_names=../shared/data/concepts/imagenet_labels.txt \
      --similarity_fns=all --text_embedder=cached+clip \
      --sentence_model=sentence-transformers/all-mpnet-base-v2

The same as `scripts/analyze.py --analysis=evaluate`
(jax_dissect/analyses/evaluate/ lists the options).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:evaluate")
