"""Re-running a similarity kernel on cached arrays, for the analyses.

The analyses never call a model or CLIP again: they take A (N, K) and P
(N, M) from the results directory and call one of the kernels of
`jax_dissect.similarity` by name, with the run's hyper-parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# Kernels whose result depends on the top activating images only.
TOP_K_FNS = ("soft_wpmi", "wpmi")


def similarity_fns() -> Mapping[str, Callable[..., Any]]:
  """The registry name -> kernel of jax_dissect.similarity."""
  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  return similarity.SIMILARITY_FNS


def check_similarity_name(name: str) -> None:
  """Raises ValueError if `name` is not a registered similarity function."""
  names = sorted(similarity_fns())
  if name not in names:
    raise ValueError(f"unknown similarity function {name!r}; allowed: {names}")


def similarity_matrix(name: str, activations: np.ndarray,
                      concept_activations: np.ndarray, *, seed: int = 0,
                      **kwargs: Any) -> np.ndarray:
  """Runs kernel `name` on (A, P) and returns S as a numpy array.

  Args:
    name: a key of similarity.SIMILARITY_FNS (e.g. "soft_wpmi").
    activations: A, (N, K).
    concept_activations: P, (N, M).
    seed: seed of the jax.random key that rank_reorder needs (ignored by the
      other kernels); a `key` in kwargs takes precedence.
    **kwargs: the kernel's hyper-parameters; a top_k larger than N is
      lowered to N with a warning, as describe_neurons does.

  Returns:
    S, float32 (K, M).
  """
  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  check_similarity_name(name)
  fn = similarity_fns()[name]
  # As describe_neurons does: top_k lowered to N, rank_reorder's key.
  kwargs = similarity.fit_kwargs(name, np.shape(activations)[0], kwargs, seed)
  a = np.asarray(activations, np.float32)
  p = np.asarray(concept_activations, np.float32)
  return np.asarray(fn(a, p, **kwargs), np.float32)


def kernel_kwargs(run_fn: str, run_kwargs: Mapping[str, Any], name: str,
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """Hyper-parameters to re-run kernel `name` with.

  The run's own kwargs apply when `name` is the run's function, the kernel's
  defaults otherwise; `overrides` go on top. A `key` entry (not JSON) is
  dropped: rank_reorder gets a fresh key from a seed.
  """
  kwargs = dict(run_kwargs) if name == run_fn else {}
  kwargs.update(overrides or {})
  kwargs.pop("key", None)
  return kwargs


def top_labels(similarity: np.ndarray, n: int) -> np.ndarray:
  """Indices of the n best concepts per neuron, best first: int (K, n)."""
  similarity = np.asarray(similarity)
  n = min(n, similarity.shape[1])
  part = np.argpartition(-similarity, n - 1, axis=1)[:, :n]
  order = np.argsort(-np.take_along_axis(similarity, part, 1), axis=1,
                     kind="stable")
  return np.take_along_axis(part, order, 1)
