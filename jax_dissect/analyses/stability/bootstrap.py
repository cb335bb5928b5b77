"""How much to trust a label: bootstrap and top_k stability.

Only the similarity kernel re-runs, on the cached A (N, K) and P (N, M) of a
run; no model or CLIP call (the analysis is jax_dissect.analyses.stability).

- Bootstrap: B resamples of the probe set (N images drawn with replacement,
  from an explicit jax.random key); per neuron, the fraction of resamples
  whose label equals the full-data label ("agreement"), and a percentile
  confidence interval of the full-data label's score over the resamples.
- top_k: for soft_wpmi and wpmi, the label under top_k in {5, 10, 16, 50,
  100} (values > N are skipped) and the fraction of those equal to the
  full-data label.

Each resample gathers rows of A and P, so one extra copy of P is alive at a
time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

from absl import logging
import jax
import numpy as np

from jax_dissect import similarity

DEFAULT_TOP_KS = (5, 10, 16, 50, 100)
# A neuron counts as stable in the layer summary at this agreement or more.
STABLE_AGREEMENT = 0.9


@dataclasses.dataclass
class Stability:
  """Stability of the labels of one layer's K neurons.

  Attributes:
    labels: int (K,) full-data label index (argmax of S).
    scores: float (K,) full-data score of that label.
    resample_labels: int (B, K) label index in each bootstrap resample.
    resample_scores: float (B, K) score of the full-data label in each
      resample.
    agreement: float (K,) fraction of resamples with the full-data label.
    score_ci: float (K, 2) percentile interval of resample_scores at
      `confidence`.
    confidence: the interval's coverage, e.g. 0.95.
    top_ks: the top_k values evaluated (empty if the kernel has no top_k).
    top_k_labels: int (T, K) label index under each of top_ks.
    top_k_agreement: float (K,) fraction of top_ks giving the full-data label
      (NaN if top_ks is empty).
  """
  labels: np.ndarray
  scores: np.ndarray
  resample_labels: np.ndarray
  resample_scores: np.ndarray
  agreement: np.ndarray
  score_ci: np.ndarray
  confidence: float
  top_ks: tuple[int, ...]
  top_k_labels: np.ndarray
  top_k_agreement: np.ndarray


def bootstrap_indices(key: jax.Array, num_images: int,
                      num_resamples: int) -> np.ndarray:
  """Row indices of `num_resamples` bootstrap resamples: int (B, N).

  Resample b uses jax.random.fold_in(key, b), so it does not depend on B.
  """
  return np.stack([
      np.asarray(jax.random.randint(jax.random.fold_in(key, b), (num_images,),
                                    0, num_images))
      for b in range(num_resamples)
  ]) if num_resamples else np.zeros((0, num_images), np.int64)


def label_stability(activations: np.ndarray, concept_activations: np.ndarray,
                    similarity_fn: str = "soft_wpmi", *,
                    num_resamples: int = 20, seed: int = 0,
                    confidence: float = 0.95,
                    top_ks: Sequence[int] = DEFAULT_TOP_KS,
                    kernel_kwargs: Mapping[str, Any] | None = None,
                    kernel_seed: int | None = None,
                    devices: Any = None) -> Stability:
  """Bootstrap and top_k stability of one layer's labels.

  Args:
    activations: A, (N, K).
    concept_activations: P, (N, M).
    similarity_fn: name of the kernel (similarity.names()).
    num_resamples: B, the number of bootstrap resamples (>= 1).
    seed: seed of the jax.random key of the resamples.
    confidence: coverage of the score interval, in (0, 1).
    top_ks: top_k values to try (soft_wpmi and wpmi only; values > N are
      skipped with a warning).
    kernel_kwargs: the kernel's hyper-parameters (as in the run).
    kernel_seed: seed of rank_reorder's key, the same in every run (default
      `seed`); the run's seed reproduces its labels.
    devices: devices the kernel runs on (similarity.compute's; None = all).

  Returns:
    A Stability.
  """
  kernel = similarity.get_kernel(similarity_fn)
  if not isinstance(num_resamples, (int, np.integer)) or num_resamples < 1:
    raise ValueError(f"num_resamples must be a positive int; got "
                     f"{num_resamples!r}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
  a = np.asarray(activations, np.float32)
  p = np.asarray(concept_activations, np.float32)
  if a.ndim != 2 or p.ndim != 2 or a.shape[0] != p.shape[0]:
    raise ValueError(f"activations (N, K) and concept_activations (N, M) "
                     f"must share N; got {a.shape} and {p.shape}")
  kwargs = dict(kernel_kwargs or {})
  kwargs.pop("key", None)
  n, k = a.shape
  key = jax.random.key(seed)
  k_seed = seed if kernel_seed is None else kernel_seed

  # rank_reorder's permutations use the same key in every run: only the
  # probe set varies between resamples (and the kernel compiles once).
  def run(a_, p_, **extra):
    return np.asarray(similarity.compute(similarity_fn, a_, p_, seed=k_seed,
                                         devices=devices,
                                         **{**kwargs, **extra}))

  full = run(a, p)
  labels = np.argmax(full, axis=1)
  scores = full[np.arange(k), labels]
  idx = bootstrap_indices(key, n, num_resamples)
  resample_labels = np.empty((num_resamples, k), np.int64)
  resample_scores = np.empty((num_resamples, k), np.float32)
  for b in range(num_resamples):
    s = run(a[idx[b]], p[idx[b]])
    resample_labels[b] = np.argmax(s, axis=1)
    resample_scores[b] = s[np.arange(k), labels]
  agreement = np.mean(resample_labels == labels[None], axis=0)
  tail = 100 * (1 - confidence) / 2
  score_ci = np.percentile(resample_scores, [tail, 100 - tail], axis=0).T

  used_top_ks: list[int] = []
  top_k_labels = []
  if kernel.uses_top_k:
    for t in top_ks:
      if t > n:
        logging.warning("top_k=%d > N=%d probe images: skipped", t, n)
        continue
      used_top_ks.append(int(t))
      top_k_labels.append(np.argmax(run(a, p, top_k=int(t)), axis=1))
  top_k_labels = (np.stack(top_k_labels) if top_k_labels
                  else np.zeros((0, k), np.int64))
  top_k_agreement = (np.mean(top_k_labels == labels[None], axis=0)
                     if used_top_ks else np.full(k, np.nan))
  return Stability(labels=labels, scores=scores,
                   resample_labels=resample_labels,
                   resample_scores=resample_scores, agreement=agreement,
                   score_ci=score_ci, confidence=confidence,
                   top_ks=tuple(used_top_ks), top_k_labels=top_k_labels,
                   top_k_agreement=top_k_agreement)
