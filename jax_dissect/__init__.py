"""jax_dissect: CLIP-Dissect neuron descriptions in JAX/Flax."""

__version__ = "0.1.0"
