"""The five CLIP-Dissect similarity functions, as batched jitted array code.

Every public kernel takes activations A of shape (N images, K neurons) and the
concept-activation matrix P of shape (N images, M concepts), numpy or jax,
and returns S of shape (K, M), float32, where S[k, m] scores how well concept
m describes neuron k. The formulas are those of docs/design.md.

Each kernel is split into three parts so that `jax_dissect.sharding` can run
it with neurons spread over devices and still get the single-device result:

  prepare(P) -> ctx                 per-concept tensors, computed once
  neuron_scores(A_chunk, ctx, ...)  (chunk, M) scores, neuron-independent
  prior (soft_wpmi, wpmi only)      S = L - lam * (logsumexp_k L - log K)

Neurons are processed in chunks (lax.map) so that peak memory is
O(N*M + chunk_size*M) (rank_reorder: O(N*M + chunk_size*n*M) for its sort),
never K*N*M.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

# Bytes the (chunk, top_k, M) intermediate of a neuron chunk may take when
# chunk_size is not given.
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Number of random permutations of rank_reorder's baseline.
NUM_BASELINE_PERMUTATIONS = 5
# (soft_)wpmi multiply this many factors before taking one log. Every factor
# is >= eps >= 1e-7 (eps is bounded below), so a product of 4 is >= 1e-28,
# far above float32's smallest normal (1.2e-38): no underflow, and the result
# equals the sum of logs to float32 rounding.
_PRODUCT_BLOCK = 4
_MIN_EPS = 1e-7
_TINY = float(np.finfo(np.float32).tiny)


# ----------------------------------------------------------------------------
# Input validation.
# ----------------------------------------------------------------------------


def _as_matrix(x: Any, name: str, dims: str) -> jax.Array:
  """Converts x to a float32 2-D jax array, or raises a clear ValueError."""
  if x is None:
    raise ValueError(f"{name} is None; expected a 2-D array ({dims})")
  if not isinstance(x, jax.Array):
    x = np.asarray(x)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or
                                 x.dtype == np.bool_):
      raise ValueError(f"{name} must be a numeric array; got dtype {x.dtype}")
  if x.ndim != 2:
    raise ValueError(
        f"{name} must be 2-D ({dims}); got {x.ndim}-D shape {tuple(x.shape)}")
  if 0 in x.shape:
    raise ValueError(f"{name} is empty: shape {tuple(x.shape)} ({dims})")
  return jnp.asarray(x, jnp.float32)


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
  return jnp.all(jnp.isfinite(x))


@jax.jit
def _count_nonfinite(x: jax.Array) -> jax.Array:
  return jnp.sum(~jnp.isfinite(x))


def validate_inputs(activations: Any, concept_activations: Any,
                    ) -> tuple[jax.Array, jax.Array]:
  """Checks the (A, P) pair every kernel takes.

  Args:
    activations: (N, K) neuron activations, N images, K neurons.
    concept_activations: (N, M) CLIP image-concept similarities.

  Returns:
    (A, P) as float32 jax arrays.

  Raises:
    ValueError: non-2-D or empty input, mismatched N, fewer than 2 concepts,
      NaN or inf values.
  """
  a = _as_matrix(activations, "activations", "N images, K neurons")
  p = _as_matrix(concept_activations, "concept_activations",
                 "N images, M concepts")
  if a.shape[0] != p.shape[0]:
    raise ValueError(
        f"activations has {a.shape[0]} images (rows) but concept_activations "
        f"has {p.shape[0]}; both must have one row per probe image")
  if p.shape[1] < 2:
    raise ValueError(f"concept_activations has {p.shape[1]} concept column; "
                     "at least 2 concepts are needed to choose a label")
  for name, x in (("activations", a), ("concept_activations", p)):
    if not bool(_all_finite(x)):  # A cheap AND-reduction; count only then.
      bad = int(_count_nonfinite(x))
      raise ValueError(f"{name} contains {bad} NaN or inf value(s); "
                       "all values must be finite")
  return a, p


def _check_top_k(top_k: int, num_images: int) -> int:
  if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool):
    raise ValueError(f"top_k must be an int; got {top_k!r}")
  if not 1 <= top_k <= num_images:
    raise ValueError(f"top_k={top_k} must be between 1 and the number of "
                     f"probe images N={num_images}")
  return int(top_k)


# ----------------------------------------------------------------------------
# Kernel parts.
# ----------------------------------------------------------------------------


def _chunk_size_for(per_neuron_bytes: int, num_neurons: int,
                    chunk_size: int | None) -> int:
  if chunk_size is None:
    chunk_size = max(1, DEFAULT_CHUNK_BYTES // max(per_neuron_bytes, 1))
  elif not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
    raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
  return int(min(chunk_size, num_neurons))


def map_neuron_chunks(fn: Callable[[jax.Array, jax.Array], jax.Array],
                      activations: jax.Array, chunk_size: int,
                      neuron_offset: jax.Array | int = 0) -> jax.Array:
  """Applies fn to chunks of neurons sequentially and stacks the results.

  Args:
    fn: maps (chunk, N) activations (neurons as rows) and the (chunk,)
      global neuron ids to (chunk, M) scores.
    activations: (N, K) activations.
    chunk_size: neurons per chunk; K is zero-padded to a multiple of it.
    neuron_offset: global id of this block's neuron 0 (for sharded runs).

  Returns:
    (K, M) scores.
  """
  n, k = activations.shape
  num_chunks = -(-k // chunk_size)
  pad = num_chunks * chunk_size - k
  a_t = jnp.pad(activations.T, ((0, pad), (0, 0)))
  ids = jnp.arange(num_chunks * chunk_size) + neuron_offset
  out = jax.lax.map(lambda xs: fn(*xs),
                    (a_t.reshape(num_chunks, chunk_size, n),
                     ids.reshape(num_chunks, chunk_size)))
  return out.reshape(num_chunks * chunk_size, -1)[:k]


def log_prior(log_likelihood: jax.Array, num_neurons: int | None = None,
              valid: jax.Array | None = None) -> jax.Array:
  """prior[m] = logsumexp_k L[k, m] - log K over the (valid) neurons."""
  if valid is not None:
    log_likelihood = jnp.where(valid[:, None], log_likelihood, -jnp.inf)
  k = log_likelihood.shape[0] if num_neurons is None else num_neurons
  return jax.nn.logsumexp(log_likelihood, axis=0) - math.log(k)


@functools.partial(jax.jit, static_argnums=(1,))
def apply_prior(log_likelihood: jax.Array, lam: float) -> jax.Array:
  """S = L - lam * log_prior(L), (K, M) from the (K, M) L of all neurons.

  Its own program, run on one device by every path (one device, several,
  several processes), so the prior rounds the same way in each and
  near-tied concepts keep their order.
  """
  return log_likelihood - lam * log_prior(log_likelihood)


def _sum_log_factors(q: jax.Array, idx: jax.Array, offset: jax.Array,
                     scale: jax.Array) -> jax.Array:
  """sum_j log(offset_j + scale_j * q[idx[:, j]]), for a chunk of neurons.

  Walks the top_k positions in blocks of _PRODUCT_BLOCK: each step gathers
  one row of q per neuron and position, multiplies the block's factors and
  takes one log, so only (chunk, M) arrays are live and no
  (chunk, top_k, M) tensor is built.

  Args:
    q: (N, M) per-image concept probabilities.
    idx: (C, top_k) int32 image indices of each neuron's top images.
    offset: (top_k,) per-position offset; factors must be >= 1e-7.
    scale: (top_k,) per-position scale.

  Returns:
    (C, M) float32 sums of logs.
  """
  c, top_k = idx.shape
  blocks = -(-top_k // _PRODUCT_BLOCK)
  pad = blocks * _PRODUCT_BLOCK - top_k
  # Padded positions gather row 0 with the factor exactly 1.
  idx = jnp.pad(idx, ((0, 0), (0, pad)))
  offset = jnp.pad(offset, (0, pad), constant_values=1.0)
  scale = jnp.pad(scale, (0, pad))

  def block(b, acc):
    product = None
    for i in range(_PRODUCT_BLOCK):
      j = b * _PRODUCT_BLOCK + i
      factor = offset[j] + scale[j] * q[idx[:, j]]
      product = factor if product is None else product * factor
    return acc + jnp.log(product)

  return jax.lax.fori_loop(0, blocks, block,
                           jnp.zeros((c, q.shape[1]), jnp.float32))


def _soft_wpmi_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                      q: jax.Array, *, top_k: int, p_start: float,
                      p_end: float, eps: float) -> jax.Array:
  """L[k, m] = sum_j log(1 + p_j (Q[I_kj, m] - 1) + eps), (chunk, M)."""
  del neuron_ids
  _, idx = jax.lax.top_k(a_chunk, top_k)  # (chunk, top_k), descending.
  j = jnp.arange(top_k, dtype=jnp.float32)
  p = p_start - (j / top_k) * (p_start - p_end)  # (top_k,)
  # 1 + p (Q - 1) + eps = (1 - p + eps) + p Q.
  return _sum_log_factors(q, idx, 1.0 - p + eps, p)


def _wpmi_scores(a_chunk: jax.Array, neuron_ids: jax.Array, q: jax.Array, *,
                 top_k: int, eps: float) -> jax.Array:
  """L[k, m] = sum_j log(Q[I_kj, m] + eps), (chunk, M)."""
  del neuron_ids
  _, idx = jax.lax.top_k(a_chunk, top_k)
  return _sum_log_factors(q, idx, jnp.full((top_k,), eps, jnp.float32),
                          jnp.ones((top_k,), jnp.float32))


_COLUMN_BLOCK = 16


def column_sums(x: jax.Array, fn: Callable[[jax.Array], jax.Array] = None
                ) -> jax.Array:
  """sum_n fn(x)[n, :] for an (N, M) array, as an (M,) float32 vector.

  XLA:CPU reduces over the major axis of a large array ~25x slower than
  over the minor one; adding blocks of _COLUMN_BLOCK rows element-wise into
  a (_COLUMN_BLOCK, M) accumulator first keeps the work vectorized along M.
  """
  fn = fn or (lambda v: v)
  n, m = x.shape
  blocks = n // _COLUMN_BLOCK

  def body(i, acc):
    return acc + fn(jax.lax.dynamic_slice_in_dim(x, i * _COLUMN_BLOCK,
                                                 _COLUMN_BLOCK, 0))

  rest = jnp.sum(fn(x[blocks * _COLUMN_BLOCK:]), axis=0)
  if not blocks:  # N < _COLUMN_BLOCK: no full block to slice.
    return rest
  acc = jax.lax.fori_loop(0, blocks, body,
                          jnp.zeros((_COLUMN_BLOCK, m), jnp.float32))
  return jnp.sum(acc, axis=0) + rest


def _inverse_norms(x: jax.Array, min_norm: float) -> jax.Array:
  """1 / max(||x[:, m]||, min_norm) for each column m of (N, M) x."""
  return 1.0 / jnp.maximum(jnp.sqrt(column_sums(x, lambda v: v * v)),
                           min_norm)


def _row_normalize(x: jax.Array, min_norm: float) -> jax.Array:
  norm = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
  return x / jnp.maximum(norm, min_norm)


def _scaled_dot(a_hat: jax.Array, ctx: tuple[jax.Array, jax.Array]
                ) -> jax.Array:
  """(a_hat @ Y) * inv[None, :] for ctx = (Y (N, M), inv (M,))."""
  y, inv = ctx
  return jnp.dot(a_hat, y, precision=jax.lax.Precision.HIGHEST) * inv[None]


def _cos_prepare(p: jax.Array) -> tuple[jax.Array, jax.Array]:
  # P is not divided in place (one less N x M pass): the column norms scale
  # the (chunk, M) products instead.
  return p, _inverse_norms(p, _TINY)


def _cos_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                ctx: tuple[jax.Array, jax.Array]) -> jax.Array:
  del neuron_ids
  return _scaled_dot(_row_normalize(a_chunk, _TINY), ctx)


def _centered_cubed(x: jax.Array, axis: int) -> jax.Array:
  if axis == 0:
    mean = column_sums(x) / x.shape[0]
    centered = x - mean[None]
  else:
    centered = x - jnp.mean(x, axis=1, keepdims=True)
  return centered * centered * centered


def _cos_cubed_prepare(p: jax.Array, min_norm: float
                       ) -> tuple[jax.Array, jax.Array]:
  cubed = _centered_cubed(p, 0)
  return cubed, _inverse_norms(cubed, min_norm)


def _cos_cubed_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                      ctx: tuple[jax.Array, jax.Array], *,
                      min_norm: float) -> jax.Array:
  del neuron_ids
  return _scaled_dot(_row_normalize(_centered_cubed(a_chunk, 1), min_norm),
                     ctx)


def rank_reorder_permutations(key: jax.Array, neuron_ids: jax.Array,
                              n: int) -> jax.Array:
  """The baseline permutations rank_reorder uses for the given neurons.

  Neuron k's permutations depend only on (key, k), so a chunked or sharded
  run uses the same ones as a single call.

  Args:
    key: a jax.random key.
    neuron_ids: (C,) global neuron indices.
    n: length of each permutation (number of top images).

  Returns:
    (C, NUM_BASELINE_PERMUTATIONS, n) int32 permutations of range(n).
  """
  def one(k):
    keys = jax.random.split(jax.random.fold_in(key, k),
                            NUM_BASELINE_PERMUTATIONS)
    return jax.vmap(lambda kk: jax.random.permutation(kk, n))(keys)
  return jax.vmap(one)(neuron_ids)


def _rank_reorder_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                         p: jax.Array, *, key: jax.Array, n: int,
                         power: float, scale_p: float) -> jax.Array:
  """rank_reorder scores for a chunk of neurons, (chunk, M)."""
  top, idx = jax.lax.top_k(a_chunk, n)  # (c, n) descending.
  ascending = top[:, ::-1]
  p_top = p[idx]  # (c, n, M)
  # order[c, r, m]: the image (position in top-n) with the r-th smallest P.
  order = jnp.argsort(p_top, axis=1)
  # The r-th smallest P gets the r-th smallest activation.
  reordered_src = jnp.take_along_axis(top[:, :, None], order, axis=1)
  err = jnp.mean(jnp.abs(reordered_src - ascending[:, :, None])**power,
                 axis=1)  # (c, M)
  perms = rank_reorder_permutations(key, neuron_ids, n)  # (c, P, n)
  permuted = jax.vmap(lambda v, pr: v[pr])(ascending, perms)
  baseline = jnp.mean(jnp.abs(ascending[:, None, :] - permuted)**power,
                      axis=(1, 2))  # (c,)
  ratio = jnp.where(baseline[:, None] > 0,
                    err / jnp.where(baseline > 0, baseline, 1.0)[:, None], 0.0)
  mean_p = jnp.maximum(jnp.mean(p_top, axis=1), jnp.finfo(jnp.float32).tiny)
  return -ratio / mean_p**scale_p


@dataclasses.dataclass(frozen=True)
class KernelPlan:
  """A kernel prepared for given inputs and hyper-parameters.

  Attributes:
    prepare: P (N, M) -> per-concept context passed to neuron_scores.
    neuron_scores: (A_chunk (chunk, N), neuron_ids (chunk,), ctx) ->
      (chunk, M); pure, jit-compatible, independent across neurons.
    lam: weight of the log prior (soft_wpmi, wpmi), or None.
    chunk_size: neurons per chunk.
    uses_key: the kernel takes a PRNG key; it is passed at run time as
      ctx = (prepare(P), key), not baked into the plan, so a new key does
      not recompile.
  """
  prepare: Callable[[jax.Array], Any]
  neuron_scores: Callable[[jax.Array, jax.Array, Any], jax.Array]
  lam: float | None
  chunk_size: int
  uses_key: bool = False


# Live bytes per neuron and concept of _sum_log_factors: the accumulator,
# the running product, one gathered row and one factor, float32 each.
_LOG_SUM_BYTES_PER_NEURON = 4 * 4


def _check_eps(eps: float) -> None:
  if not eps >= _MIN_EPS:
    raise ValueError(f"eps={eps} must be >= {_MIN_EPS} (it keeps every "
                     "factor of the log positive)")


def _softmax_q(p: jax.Array, a: float) -> jax.Array:
  return jax.nn.softmax(a * p, axis=1)

def _plan_soft_wpmi(n, k, m, chunk_size, *, top_k=100, a=10.0, lam=1.0,
                    p_start=0.998, p_end=0.97, eps=1e-7):
  top_k = _check_top_k(top_k, n)
  for nm, v in (("p_start", p_start), ("p_end", p_end)):
    if not 0.0 <= v <= 1.0:
      raise ValueError(f"{nm}={v} must be in [0, 1]")
  _check_eps(eps)
  return KernelPlan(
      prepare=functools.partial(_softmax_q, a=float(a)),
      neuron_scores=lambda x, ids, q: _soft_wpmi_scores(
          x, ids, q, top_k=top_k, p_start=float(p_start), p_end=float(p_end),
          eps=float(eps)),
      lam=float(lam),
      chunk_size=_chunk_size_for(_LOG_SUM_BYTES_PER_NEURON * m, k,
                                 chunk_size))


def _plan_wpmi(n, k, m, chunk_size, *, top_k=28, a=2.0, lam=0.6, eps=1e-7):
  top_k = _check_top_k(top_k, n)
  _check_eps(eps)
  return KernelPlan(
      prepare=functools.partial(_softmax_q, a=float(a)),
      neuron_scores=lambda x, ids, q: _wpmi_scores(x, ids, q, top_k=top_k,
                                                   eps=float(eps)),
      lam=float(lam),
      chunk_size=_chunk_size_for(_LOG_SUM_BYTES_PER_NEURON * m, k,
                                 chunk_size))


def _plan_cos(n, k, m, chunk_size):
  return KernelPlan(prepare=_cos_prepare, neuron_scores=_cos_scores,
                    lam=None,
                    chunk_size=_chunk_size_for(n * 4 * 4, k, chunk_size))


def _plan_cos_cubed(n, k, m, chunk_size, *, min_norm=1e-3):
  if not min_norm > 0:
    raise ValueError(f"min_norm={min_norm} must be > 0")
  min_norm = float(min_norm)
  return KernelPlan(
      prepare=functools.partial(_cos_cubed_prepare, min_norm=min_norm),
      neuron_scores=lambda x, ids, ctx: _cos_cubed_scores(
          x, ids, ctx, min_norm=min_norm),
      lam=None,
      chunk_size=_chunk_size_for(n * 4 * 4, k, chunk_size))


def _check_key(key: Any) -> None:
  if key is None:
    raise ValueError("rank_reorder needs key=jax.random.key(seed) for its "
                     "baseline permutations")
  if not isinstance(key, jax.Array) or not jnp.issubdtype(
      key.dtype, jax.dtypes.prng_key):
    raise ValueError("key must be a jax.random key, e.g. jax.random.key(0); "
                     f"got {key!r}")


def _plan_rank_reorder(n, k, m, chunk_size, *, key=None, top_fraction=0.05,
                       p=3.0, scale_p=0.5):
  _check_key(key)
  if not 0.0 < top_fraction <= 1.0:
    raise ValueError(f"top_fraction={top_fraction} must be in (0, 1]")
  top_n = int(math.floor(n * top_fraction))
  if top_n < 2:
    raise ValueError(
        f"rank_reorder uses floor(N * top_fraction) = floor({n} * "
        f"{top_fraction}) = {top_n} top images; need at least 2 (more probe "
        "images or a larger top_fraction)")
  # (chunk, n, M) values, int32 sort order and gathered activations.
  per_neuron = top_n * m * 4 * 4
  return KernelPlan(
      prepare=lambda x: x,
      neuron_scores=lambda x, ids, ctx: _rank_reorder_scores(
          x, ids, ctx[0], key=ctx[1], n=top_n, power=float(p),
          scale_p=float(scale_p)),
      lam=None,
      chunk_size=_chunk_size_for(per_neuron, k, chunk_size),
      uses_key=True)


# ----------------------------------------------------------------------------
# The registry.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Kernel:
  """A registered similarity function.

  Attributes:
    name: its registry name.
    planner: (N, K, M, chunk_size, **hyper) -> KernelPlan; validates the
      hyper-parameters. Its keyword defaults are the kernel's defaults.
    defaults: hyper-parameter name -> default (from the planner's signature).
    uses_top_k: the scores depend only on each neuron's top_k images.
    uses_key: the kernel takes a jax.random key (`key`).
  """
  name: str
  planner: Callable[..., KernelPlan]
  defaults: Mapping[str, Any]
  uses_top_k: bool
  uses_key: bool


KERNELS: dict[str, Kernel] = {}


def register_kernel(name: str, planner: Callable[..., KernelPlan]) -> Kernel:
  """Registers a similarity function under `name`; returns its Kernel.

  The planner is called as planner(N, K, M, chunk_size, **hyper) and returns
  a KernelPlan (see the module docstring); its keyword-only arguments and
  their defaults are the kernel's hyper-parameters. A `key` argument marks a
  kernel that needs a jax.random key; a `top_k` argument one that uses each
  neuron's top_k images.
  """
  params = inspect.signature(planner).parameters
  defaults = {p.name: p.default for p in params.values()
              if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name != "key"}
  kernel = Kernel(name=name, planner=planner, defaults=defaults,
                  uses_top_k="top_k" in params, uses_key="key" in params)
  KERNELS[name] = kernel
  return kernel


def names() -> list[str]:
  """The registered similarity functions' names."""
  return list(KERNELS)


def get_kernel(name: str) -> Kernel:
  """The Kernel registered as `name`, or a ValueError listing the names."""
  if name not in KERNELS:
    raise ValueError(f"unknown similarity function {name!r}; allowed: "
                     f"{', '.join(KERNELS)}")
  return KERNELS[name]


register_kernel("soft_wpmi", _plan_soft_wpmi)
register_kernel("wpmi", _plan_wpmi)
register_kernel("cos_similarity", _plan_cos)
register_kernel("cos_similarity_cubed", _plan_cos_cubed)
register_kernel("rank_reorder", _plan_rank_reorder)


def plan_kernel(name: str, num_images: int, num_neurons: int,
                num_concepts: int, *, chunk_size: int | None = None,
                **hyper) -> KernelPlan:
  """Builds the KernelPlan of similarity function `name` (validates hyper).

  Raises:
    ValueError: unknown name, unknown or bad hyper-parameters.
  """
  kernel = get_kernel(name)
  unknown = sorted(set(hyper) - set(kernel.defaults) - {"key"})
  if unknown:
    raise ValueError(f"{name} has no hyper-parameter(s) {unknown}; allowed: "
                     f"{', '.join(kernel.defaults) or 'none'}")
  return kernel.planner(num_images, num_neurons, num_concepts, chunk_size,
                        **hyper)


def plan_context(plan: KernelPlan, p: jax.Array, key: jax.Array) -> Any:
  """The ctx passed to plan.neuron_scores (key added for keyed kernels)."""
  ctx = plan.prepare(p)
  return (ctx, key) if plan.uses_key else ctx


@functools.partial(jax.jit, static_argnums=(0,))
def _run_plan(plan: KernelPlan, a: jax.Array, p: jax.Array,
              key: jax.Array) -> jax.Array:
  ctx = plan_context(plan, p, key)
  return map_neuron_chunks(lambda x, ids: plan.neuron_scores(x, ids, ctx),
                           a, plan.chunk_size)


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
  kernel = get_kernel(name)
  if kernel.uses_key:
    _check_key(hyper.get("key"))
  try:
    cache_key = (name, num_images, num_neurons, num_concepts, chunk_size,
                 tuple(sorted((k, v) for k, v in hyper.items()
                              if k != "key")))
    hash(cache_key)
  except TypeError as e:
    raise ValueError(f"bad hyper-parameters for {name}: {e}") from e
  if cache_key not in _PLAN_CACHE:
    try:
      plan = plan_kernel(name, num_images, num_neurons, num_concepts,
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
  kernel = get_kernel(name)
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

  The one way to run a kernel by name: describe_neurons, the analyses and
  the benchmarks call it. With several devices the neurons are split across
  them (jax_dissect.sharding) and the result equals the single-device one.

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
  from jax_dissect import sharding  # pylint: disable=g-import-not-at-top
  get_kernel(name)
  if method not in sharding.METHODS:
    raise ValueError(f"method={method!r}; allowed: "
                     f"{', '.join(sharding.METHODS)}")
  a, p = validate_inputs(activations, concept_activations)
  n, k = a.shape
  m = p.shape[1]
  if fit:
    hyper = fit_hyper(name, n, hyper, seed)
  elif get_kernel(name).uses_key and "key" not in hyper:
    hyper = {**hyper, "key": jax.random.key(seed)}
  plan, key = resolve_plan(name, n, k, m, chunk_size=chunk_size, **hyper)
  devs = sharding.resolve_devices(devices)
  with jax.default_device(devs[0]):
    if len(devs) == 1:
      scores = _run_plan(plan, a, p, key)
    else:
      scores = jax.device_put(sharding.run_plan(
          plan, a, p, key, devices=devs, method=method), devs[0])
    if plan.lam is None:
      return scores
    # The prior over all neurons, the same program on one device for every
    # device count: S is then the same bits on 1 or n devices.
    return apply_prior(scores, plan.lam)


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
  s = _as_matrix(similarity, "similarity", "K neurons, M concepts")
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n must be a positive int; got {n!r}")
  vals, idx = _top_k(s, min(int(n), s.shape[1]))
  return np.asarray(vals), np.asarray(idx)
