"""describe_neurons over a series of checkpoints (weights or orbax steps).

  python scripts/series.py --config=configs/resnet18_cifar100.py \
      --checkpoint_dir=ckpts --result_dir=results/series

The same command as `jax-dissect series` (jax_dissect/commands/series.py).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jax_dissect.commands import series  # pylint: disable=g-import-not-at-top

if __name__ == "__main__":
  series.run()
