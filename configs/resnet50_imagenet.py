"""The shipped config jax_dissect/configs/resnet50_imagenet.py, by its old path.

`--config=configs/resnet50_imagenet.py[:smoke]` and `--config=resnet50_imagenet[:smoke]`
load the same config (jax_dissect/configs/resnet50_imagenet.py says what it
runs).
"""

from jax_dissect.configs.resnet50_imagenet import get_config

__all__ = ["get_config"]
