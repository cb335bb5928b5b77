r"""Describe-and-Dissect: open-vocabulary descriptions of a run's neurons.

  python scripts/describe_and_dissect.py --results_dir=results/rn50 \
      --layer=layer4 --units=12,345 --captioner=my_models:blip \
      --llm=my_models:chat --generator=my_models:sd15

The same as `scripts/analyze.py --analysis=dnd` (jax_dissect/analyses/dnd/
lists the options; docs/dnd.md explains the method and how to plug in
models). Writes <results_dir>/analysis/dnd.csv and dnd_details.json.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("analysis:dnd")
