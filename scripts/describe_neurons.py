"""Labels every neuron of the chosen layers of a vision model with CLIP.

  python scripts/describe_neurons.py --config=configs/resnet50_imagenet.py \
      --config.similarity_fn=wpmi --result_dir=results/rn50

The same command as `jax-dissect describe` (jax_dissect/commands/describe.py,
which lists the flags).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("describe")
