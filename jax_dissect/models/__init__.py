"""Target models: their specs, the registry, Flax ResNets and Hugging Face
models, torchvision weight conversion, and layer capture.

  spec.py         ModelSpec (constructor, weights, preprocessing), random
                  variables, weight fingerprints
  registry.py     name (or `package.module:factory`) -> ModelSpec
  resnet.py       Flax ResNet-18/50 with torchvision's structure
  convert.py      torchvision state dict -> Flax variables (pure converter)
  hf.py           Hugging Face ViT and CLIP vision towers as targets
  capture.py      layer outputs of any linen/nnx module, pooled, in batches
  capture_nnx.py  the call recording capture.py uses for nnx modules
"""

from jax_dissect.models.registry import get_model
from jax_dissect.models.registry import list_models
from jax_dissect.models.registry import load_target
from jax_dissect.models.registry import register_model
from jax_dissect.models.registry import resolve_model
from jax_dissect.models.registry import run_target_model
from jax_dissect.models.spec import ModelSpec
from jax_dissect.models.spec import random_variables
from jax_dissect.models.spec import randomize_batch_norm
from jax_dissect.models.spec import weights_fingerprint

__all__ = [
    "ModelSpec",
    "get_model",
    "list_models",
    "load_target",
    "random_variables",
    "randomize_batch_norm",
    "register_model",
    "resolve_model",
    "run_target_model",
    "weights_fingerprint",
]
