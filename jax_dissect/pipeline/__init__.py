"""describe_neurons: probe data -> activations + P -> similarity -> labels.

  config.py    every option with its default; merging and checking a config
  checks.py    checks of options, paths, models and a given P, before work
  describe.py  describe_neurons, stage by stage, with the cache
"""

from jax_dissect.pipeline.config import default_config
from jax_dissect.pipeline.describe import describe_neurons

__all__ = ["default_config", "describe_neurons"]
