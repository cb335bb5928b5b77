"""Running a similarity function by name, and the public kernel functions.

`compute` is the one way to run a kernel by name (describe_neurons, the
analyses and the benchmarks call it): it validates the arrays and the
hyper-parameters, fits top_k to the probe set, makes the key of keyed
kernels, and splits the neurons over devices (jax_dissect.similarity.
sharding) so that the result equals the single-device one.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from absl import logging
import jax
import numpy as np

from jax_dissect.similarity import kernels
from jax_dissect.similarity import registry
from jax_dissect.similarity import sharding
from jax_dissect.similarity.kernels import KernelPlan


@functools.partial(jax.jit, static_argnums=(0,))
def _run_plan(plan: KernelPlan, a: jax.Array, p: jax.Array,
              key: jax.Array) -> jax.Array:
  ctx = kernels.plan_context(plan, p, key)
  return kernels.map_neuron_chunks(
      lambda x, ids: plan.neuron_scores(x, ids, ctx), a, plan.chunk_size)


# Plans are hashed by identity for jit's static argument; keep them so that
# repeated calls with the same shapes and hyper-parameters compile once.
_PLAN_CACHE: dict[tuple, KernelPlan] = {}


# A key for kernels that take none (jit needs an array in its place).
_UNUSED_KEY = None


def resolve_plan(name: str, num_images: int, num_neurons: int,
                 num_concepts: int, *, chunk_size: int | None = None,
                 **hyper) -> tuple[KernelPlan, jax.Array]:
  """The (cached) plan of a call and the PRNG key to run it with.

  The plan is made for the global shapes (a sharded run uses the same
  validation and chunk size as a single-device one). The key is not part of
  the plan (a new key must not recompile), so it is checked on every call;
  kernels without a key get a fixed dummy one.

  Returns:
    (plan, key).
  """
  global _UNUSED_KEY
  kernel = registry.get_kernel(name)
  if kernel.uses_key:
    kernels.check_key(hyper.get("key"))
  try:
    cache_key = (name, num_images, num_neurons, num_concepts, chunk_size,
                 tuple(sorted((k, v) for k, v in hyper.items()
                              if k != "key")))
    hash(cache_key)
  except TypeError as e:
    raise ValueError(f"bad hyper-parameters for {name}: {e}") from e
  if cache_key not in _PLAN_CACHE:
    try:
      plan = registry.plan_kernel(name, num_images, num_neurons, num_concepts,
                         chunk_size=chunk_size, **hyper)
    except TypeError as e:  # A hyper-parameter of the wrong kind.
      raise ValueError(f"bad hyper-parameters for {name}: {e}") from e
    if len(_PLAN_CACHE) >= 64:
      _PLAN_CACHE.pop(next(iter(_PLAN_CACHE)))
    _PLAN_CACHE[cache_key] = plan
  key = hyper.get("key")
  if key is None:
    if _UNUSED_KEY is None:
      _UNUSED_KEY = jax.random.key(0)
    key = _UNUSED_KEY
  return _PLAN_CACHE[cache_key], key


def fit_hyper(name: str, num_images: int, hyper: Mapping[str, Any] | None,
              seed: int = 0) -> dict[str, Any]:
  """The hyper-parameters of kernel `name` made ready for N probe images.

  A top_k (given or default) larger than N is lowered to N with a warning,
  and a keyed kernel gets key=jax.random.key(seed) unless a key is given.

  Args:
    name: a registered kernel.
    num_images: N.
    hyper: the hyper-parameters asked for (not modified).
    seed: seed of the key of keyed kernels (rank_reorder).

  Returns:
    A new dict of hyper-parameters.
  """
  kernel = registry.get_kernel(name)
  hyper = dict(hyper or {})
  if kernel.uses_top_k:
    top_k = hyper.get("top_k", kernel.defaults["top_k"])
    if isinstance(top_k, (int, np.integer)) and top_k > num_images:
      logging.warning("top_k=%d is larger than the %d probe images; using "
                      "top_k=%d", top_k, num_images, num_images)
      hyper["top_k"] = num_images
  if kernel.uses_key and hyper.get("key") is None:
    hyper["key"] = jax.random.key(seed)
  return hyper


def compute(name: str, activations: Any, concept_activations: Any, *,
            seed: int = 0, devices: Sequence[jax.Device] | int | None = None,
            method: str = "shard_map", chunk_size: int | None = None,
            fit: bool = True, **hyper) -> jax.Array:
  """Runs similarity function `name`: S (K, M) from A (N, K) and P (N, M).

  The one way to run a kernel by name: describe_neurons, the analyses and the
  benchmarks call it. With several devices the neurons are split across them
  (jax_dissect.similarity.sharding) and the result equals the single-device one.

  Args:
    name: a registered kernel (`names()`).
    activations: A, (N, K) numpy or jax.
    concept_activations: P, (N, M).
    seed: seed of a keyed kernel's jax.random key (unless `key` is given).
    devices: devices to split the neurons over: None for all of
      jax.devices(), a count (the first n), or a list; 1 runs on one device.
    method: "shard_map" (jit + Mesh) or "pmap", with several devices.
    chunk_size: neurons per chunk on each device (default from a memory
      budget).
    fit: lower a top_k larger than N to N with a warning (describe_neurons'
      behaviour); if False such a top_k is an error.
    **hyper: the kernel's hyper-parameters (defaults:
      `get_kernel(name).defaults`).

  Returns:
    (K, M) float32 jax array.

  Raises:
    ValueError: unknown kernel or hyper-parameter, bad hyper-parameter
      values, bad arrays (see validate_inputs).
  """
  registry.get_kernel(name)
  if method not in sharding.METHODS:
    raise ValueError(f"method={method!r}; allowed: "
                     f"{', '.join(sharding.METHODS)}")
  a, p = kernels.validate_inputs(activations, concept_activations)
  n, k = a.shape
  m = p.shape[1]
  if fit:
    hyper = fit_hyper(name, n, hyper, seed)
  elif registry.get_kernel(name).uses_key and "key" not in hyper:
    hyper = {**hyper, "key": jax.random.key(seed)}
  plan, key = resolve_plan(name, n, k, m, chunk_size=chunk_size, **hyper)
  devs = sharding.resolve_devices(devices)
  with jax.default_device(devs[0]):
    if len(devs) == 1:
      scores = _run_plan(plan, a, p, key)
    else:
      scores = jax.device_put(sharding.run_plan(
          plan, a, p, key, devices=devs, method=method), devs[0])
    if plan.lam is not None:
      # The prior over all neurons, the same program on one device for
      # every device count: S is then the same bits on 1 or n devices.
      scores = kernels.apply_prior(scores, plan.lam)
  # numpy inputs may be used in place (kernels.host_to_device): the work
  # reading them ends before the caller gets control back.
  return scores.block_until_ready()


# ----------------------------------------------------------------------------
# Public kernels: the registered functions with their formulas.
# ----------------------------------------------------------------------------


def soft_wpmi(activations, concept_activations, *, chunk_size=None, **hyper):
  """Soft weighted pointwise mutual information (the default).

  Q = softmax(a * P) over concepts; for neuron k with top images I_k
  (descending activation), p_j = p_start - (j / top_k)(p_start - p_end),
  L[k, m] = sum_j log(1 + p_j (Q[I_kj, m] - 1) + eps),
  S = L - lam * (logsumexp_k L - log K).

  Args:
    activations: (N, K) float activations of K neurons on N images.
    concept_activations: (N, M) P, CLIP cosine similarity image/concept.
    chunk_size: neurons per chunk (default from a 256 MiB budget).
    **hyper: top_k=100 (most activating images per neuron, <= N), a=10.0
      (softmax temperature multiplier), lam=1.0 (weight of the prior),
      p_start=0.998 (weight of the most activating image), p_end=0.97
      (weight at j = top_k), eps=1e-7 (added inside the log).

  Returns:
    (K, M) float32 jax array.
  """
  return compute("soft_wpmi", activations, concept_activations, devices=1,
                 fit=False, chunk_size=chunk_size, **hyper)


def wpmi(activations, concept_activations, *, chunk_size=None, **hyper):
  """Weighted pointwise mutual information.

  L[k, m] = sum_j log(Q[I_kj, m] + eps) with Q = softmax(a * P),
  S = L - lam * (logsumexp_k L - log K).

  Args:
    activations: (N, K) activations.
    concept_activations: (N, M) P.
    chunk_size: neurons per chunk.
    **hyper: top_k=28 (<= N), a=2.0, lam=0.6, eps=1e-7.

  Returns:
    (K, M) float32 jax array.
  """
  return compute("wpmi", activations, concept_activations, devices=1,
                 fit=False, chunk_size=chunk_size, **hyper)


def cos_similarity(activations, concept_activations, *, chunk_size=None):
  """Cosine similarity over images: S = A_hat^T P_hat (columns L2-normed).

  A dead (all-zero) neuron gets S = 0.

  Args:
    activations: (N, K) activations.
    concept_activations: (N, M) P.
    chunk_size: neurons per chunk.

  Returns:
    (K, M) float32 jax array.
  """
  return compute("cos_similarity", activations, concept_activations,
                 devices=1, fit=False, chunk_size=chunk_size)


def cos_similarity_cubed(activations, concept_activations, *,
                         chunk_size=None, **hyper):
  """Cosine similarity of centred, cubed columns.

  Each column of A and P: subtract its mean over images, cube element-wise,
  divide by max(L2 norm, min_norm); S = A_hat^T P_hat.

  Args:
    activations: (N, K) activations.
    concept_activations: (N, M) P.
    chunk_size: neurons per chunk.
    **hyper: min_norm=1e-3 (lower bound of the column norm).

  Returns:
    (K, M) float32 jax array.
  """
  return compute("cos_similarity_cubed", activations, concept_activations,
                 devices=1, fit=False, chunk_size=chunk_size, **hyper)


def rank_reorder(activations, concept_activations, *, key, chunk_size=None,
                 **hyper):
  """Rank reorder similarity.

  For neuron k with top n = floor(N * top_fraction) activations
  a_1 >= .. >= a_n at images I_k, and concept m: give the image with the
  r-th smallest P[., m] the r-th smallest activation, err = mean |a -
  a_reordered|^p; baseline = mean over 5 random permutations of |a_asc -
  a_asc[perm]|^p; S = -(err / baseline) / mean_j(P[I_kj, m])^scale_p.
  A neuron whose top activations are all equal gets S = 0. A concept whose
  mean P over the top images is <= 0 (outside the formula's domain) is
  treated as if the mean were float32's tiniest positive value.

  Args:
    activations: (N, K) activations.
    concept_activations: (N, M) P.
    key: jax.random key; neuron k's permutations come from
      `rank_reorder_permutations(key, [k], n)`.
    chunk_size: neurons per chunk.
    **hyper: top_fraction=0.05 (fraction of images used per neuron), p=3.0
      (exponent of the errors), scale_p=0.5 (exponent of the mean concept
      activation).

  Returns:
    (K, M) float32 jax array.
  """
  return compute("rank_reorder", activations, concept_activations, devices=1,
                 fit=False, chunk_size=chunk_size, key=key, **hyper)


# ----------------------------------------------------------------------------
# Best concepts.
# ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=(1,))
def _top_k(similarity: jax.Array, n: int):
  return jax.lax.top_k(similarity, n)


def top_concepts(similarity: Any, n: int) -> tuple[np.ndarray, np.ndarray]:
  """The n best concepts of each neuron, best first.

  Ties go to the lower concept index.

  Args:
    similarity: S, (K, M).
    n: how many (clipped to M).

  Returns:
    (values float32 (K, n), indices int (K, n)) as numpy arrays.
  """
  s = kernels.as_matrix(similarity, "similarity", "K neurons, M concepts")
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be a positive int; got {n!r}")
  vals, idx = _top_k(s, min(int(n), s.shape[1]))
  return np.asarray(vals), np.asarray(idx)
