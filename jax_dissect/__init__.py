"""jax_dissect: CLIP-Dissect neuron descriptions in JAX/Flax.

The layer-capture API is importable from the package (loaded on first use,
so `import jax_dissect` stays cheap):

  jax_dissect.list_layers(module, variables, (1, 224, 224, 3))
  jax_dissect.collect_activations(module, variables, images, ["layer4"])

See jax_dissect.activations for linen/nnx modules and apply functions.
"""

__version__ = "0.1.0"

_ACTIVATIONS_API = ("list_layers", "capture_pooled", "capture_outputs",
                    "collect_activations", "iter_activations", "pool_output")

__all__ = list(_ACTIVATIONS_API)


def __getattr__(name):
  if name in _ACTIVATIONS_API:
    from jax_dissect import activations  # pylint: disable=g-import-not-at-top
    return getattr(activations, name)
  raise AttributeError(f"module 'jax_dissect' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_ACTIVATIONS_API))
