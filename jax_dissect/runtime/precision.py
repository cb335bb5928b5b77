"""Compute dtypes of the forward passes (the `compute_dtype` option).

float32 is the default and the reference. bfloat16 and float16 run CLIP's
towers and the target model in half precision: the floating parameters
are cast once (on the device), inputs are cast by the layers, and what
comes back (pooled activations, embeddings, P) is float32. How much this
changes the labels is measured in BENCHMARKS.md ("Mixed precision").
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
DEFAULT = "float32"


def check(name: Any) -> str:
  """A compute dtype name (ValueError naming the allowed ones if not)."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype={name!r} is not valid; allowed: "
                     f"{', '.join(COMPUTE_DTYPES)}")
  return name


def dtype(name: str) -> Any:
  """The jnp dtype of a compute dtype name."""
  return jnp.dtype(check(name))


def cast_floating(tree: Any, name: str) -> Any:
  """`tree` with every floating-point leaf cast to compute dtype `name`.

  Integer and boolean leaves (counters, token ids) are kept. float32 is a
  no-op that returns `tree` itself.
  """
  if check(name) == DEFAULT:
    return tree
  target = dtype(name)

  def cast(x):
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating):
      return jnp.asarray(x, target) if isinstance(x, jax.Array) else (
          np.asarray(x).astype(target))
    return x

  return jax.tree_util.tree_map(cast, tree)


def check_finite(arrays: dict[str, np.ndarray], name: str, what: str
                 ) -> None:
  """Raises ValueError if a half-precision result overflowed.

  Args:
    arrays: {label: float32 array} computed in compute dtype `name`.
    name: the compute dtype (nothing is checked for float32).
    what: what the arrays are, for the message (e.g. "activations").
  """
  if name == DEFAULT:
    return
  for label, x in arrays.items():
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
      limit = float(jnp.finfo(dtype(name)).max)
      raise ValueError(
          f"{what} of {label!r} overflow with compute_dtype={name}: {bad} "
          f"value(s) are inf or NaN ({name} holds magnitudes up to "
          f"{limit:.4g}); use compute_dtype=bfloat16 or float32")


def with_dtype(module: Any, name: str) -> Any:
  """A Flax linen module computing in `name`, when it has a `dtype` field.

  Linen modules with a `dtype` field (the registry's ResNets, Hugging Face
  Flax modules) are cloned with that dtype; others are returned as they
  are (they compute in the dtype of their cast parameters and inputs).
  """
  if check(name) == DEFAULT:
    return module
  fields = {f.name for f in dataclasses.fields(module)} if (
      dataclasses.is_dataclass(module)) else set()
  if "dtype" in fields and hasattr(module, "clone"):
    return module.clone(dtype=dtype(name))
  return module
