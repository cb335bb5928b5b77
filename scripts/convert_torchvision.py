"""Converts torchvision ResNet weights to a Flax orbax checkpoint.

  python scripts/convert_torchvision.py --model=resnet50 \
      --weights=timm/resnet50.tv_in1k --output=checkpoints/resnet50

The same command as `jax-dissect convert` (jax_dissect/commands/convert.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect import commands  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  commands.run_script("convert")
