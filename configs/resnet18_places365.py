"""The shipped config jax_dissect/configs/resnet18_places365.py, by its old path.

`--config=configs/resnet18_places365.py[:smoke]` and `--config=resnet18_places365[:smoke]`
load the same config (jax_dissect/configs/resnet18_places365.py says what it
runs).
"""

from jax_dissect.configs.resnet18_places365 import get_config

__all__ = ["get_config"]
