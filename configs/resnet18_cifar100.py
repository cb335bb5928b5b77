"""The shipped config jax_dissect/configs/resnet18_cifar100.py, by its old path.

`--config=configs/resnet18_cifar100.py[:smoke]` and `--config=resnet18_cifar100[:smoke]`
load the same config (jax_dissect/configs/resnet18_cifar100.py says what it
runs).
"""

from jax_dissect.configs.resnet18_cifar100 import get_config

__all__ = ["get_config"]
