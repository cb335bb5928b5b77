"""The five CLIP-Dissect similarity functions, as batched jitted array code.

Every public kernel takes activations A of shape (N images, K neurons) and the
concept-activation matrix P of shape (N images, M concepts), numpy or jax,
and returns S of shape (K, M), float32, where S[k, m] scores how well concept
m describes neuron k. The formulas are those of docs/design.md.

Each kernel is split into three parts so that `jax_dissect.similarity.sharding`
can run it with neurons spread over devices and still get the single-device
result:

  prepare(P) -> ctx                 per-concept tensors, computed once
  neuron_scores(A_chunk, ctx, ...)  (chunk, M) scores, neuron-independent
  prior (soft_wpmi, wpmi only)      S = L - lam * (logsumexp_k L - log K)

Neurons are processed in chunks (lax.map) so that peak memory is
O(N*M + chunk_size*M) (rank_reorder: O(N*M + chunk_size*n*M) for its sort),
never K*N*M.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import os
import threading
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# Bytes the (chunk, top_k, M) intermediate of a neuron chunk may take when
# chunk_size is not given.
DEFAULT_CHUNK_BYTES = 256 * 2**20
# Number of random permutations of rank_reorder's baseline.
NUM_BASELINE_PERMUTATIONS = 5
# (soft_)wpmi never store Q = softmax(a P) as an (N, M) array: they compute
# it for tiles of concepts of about this many bytes (N x T float32) at a
# time, each tile from P and two (N,) vectors (see _softmax_rows).
_Q_TILE_BYTES = 4 * 2**20
# Tiles are at least this many concepts wide (fewer only if M is smaller).
_MIN_Q_TILE = 128
# (soft_)wpmi multiply up to this many factors before taking one log; the
# block size actually used comes from the hyper-parameters
# (product_block_size), so that no product leaves float32's normal range.
_MAX_PRODUCT_BLOCK = 16
_MIN_EPS = 1e-7
_TINY = float(np.finfo(np.float32).tiny)


# ----------------------------------------------------------------------------
# Input validation.
# ----------------------------------------------------------------------------


def as_matrix(x: Any, name: str, dims: str) -> jax.Array:
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
  if isinstance(x, jax.Array):
    return jnp.asarray(x, jnp.float32)
  return host_to_device(x)


# XLA:CPU uses a host buffer in place, without a copy, when its data are
# aligned to this many bytes (jax.device_put; jnp.asarray always copies).
_HOST_ALIGN = 64


# Arrays of more bytes than this are copied by several threads (numpy's
# copyto releases the GIL): a 400 MB P took 0.077 s on one thread and
# 0.030 s on two (2-core AMD EPYC), 800 MB 0.152 s and 0.061 s.
_PARALLEL_COPY_BYTES = 16 * 2**20
_COPY_THREADS = 8
_copy_pool: concurrent.futures.ThreadPoolExecutor | None = None
_copy_pool_lock = threading.Lock()


def _copy_rows(out: np.ndarray, x: np.ndarray) -> None:
  """np.copyto(out, x, casting="unsafe"), in blocks of rows on threads."""
  global _copy_pool
  threads = min(os.cpu_count() or 1, _COPY_THREADS, x.shape[0])
  if out.nbytes < _PARALLEL_COPY_BYTES or threads < 2:
    np.copyto(out, x, casting="unsafe")
    return
  with _copy_pool_lock:
    if _copy_pool is None:
      _copy_pool = concurrent.futures.ThreadPoolExecutor(
          _COPY_THREADS, thread_name_prefix="jax_dissect_copy")
  rows = -(-x.shape[0] // (4 * threads))
  list(_copy_pool.map(
      lambda lo: np.copyto(out[lo:lo + rows], x[lo:lo + rows],
                           casting="unsafe"),
      range(0, x.shape[0], rows)))


def _aligned_float32(x: np.ndarray) -> np.ndarray:
  """A float32 copy of x in a buffer aligned to _HOST_ALIGN bytes."""
  size = int(np.prod(x.shape)) * 4
  raw = np.empty(size + _HOST_ALIGN, np.uint8)
  start = (-raw.ctypes.data) % _HOST_ALIGN
  out = raw[start:start + size].view(np.float32).reshape(x.shape)
  _copy_rows(out, x)
  return out


def host_to_device(x: np.ndarray) -> jax.Array:
  """x as a float32 jax array on the default device, with at most one copy.

  On the CPU a C-contiguous float32 array aligned to 64 bytes (a
  memory-mapped .npy, as the cache returns) is used in place: no copy, no
  extra memory; any other array is copied once (converted to float32) into
  an aligned buffer that is then used in place. On accelerators the array
  is transferred. Callers must not write to x while results computed from
  the returned array are pending (`similarity.compute` waits for them).

  Args:
    x: a numeric numpy array.

  Returns:
    A float32 jax array with x's shape and values.
  """
  if jax.default_backend() != "cpu":
    return jnp.asarray(x, jnp.float32)
  if not (x.dtype == np.float32 and x.flags.c_contiguous and
          x.ctypes.data % _HOST_ALIGN == 0):
    x = _aligned_float32(x)
  return jax.device_put(x)


@jax.jit
def _all_finite(x: jax.Array) -> jax.Array:
  # x * 0 is 0 for finite x and NaN for NaN or +-inf, and a sum with a NaN
  # term is NaN. Row sums reduce along the minor axis, which XLA:CPU does
  # ~4x faster than jnp.all(jnp.isfinite(x)) over a large (N, M) array.
  return jnp.all(jnp.sum(x * 0.0, axis=1) == 0.0)


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
  a = as_matrix(activations, "activations", "N images, K neurons")
  p = as_matrix(concept_activations, "concept_activations",
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
    chunk_size: at most this many neurons per chunk. The chunks are made
      equal (ceil(K / ceil(K / chunk_size)) neurons) and K zero-padded to a
      multiple of that, so at most one neuron per chunk is padding (2048
      neurons by at most 1677 ran as 2 x 1677, 64% padding, doubling the
      time of the cos kernels).
    neuron_offset: global id of this block's neuron 0 (for sharded runs).

  Returns:
    (K, M) scores.
  """
  n, k = activations.shape
  num_chunks = -(-k // chunk_size)
  chunk_size = -(-k // num_chunks)
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
  # logsumexp over the major axis with blocked column reductions (see
  # column_sums; jax.nn.logsumexp(axis=0) is ~4x slower on XLA:CPU), and
  # the same shift as jax.nn.logsumexp: the column max where finite.
  top = column_max(log_likelihood)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  total = column_sums(log_likelihood - top[None], jnp.exp)
  return top + jnp.log(total) - math.log(k)


def product_block_size(min_factor: float, max_factor: float) -> int:
  """How many factors (soft_)wpmi may multiply before taking one log.

  Exactness: every factor f of the kernel lies in [min_factor, max_factor]
  (real-valued bounds from the hyper-parameters, see plan_soft_wpmi and
  plan_wpmi). A product of B such factors lies in [min_factor^B,
  max_factor^B]; B is the largest count (at most _MAX_PRODUCT_BLOCK) for
  which that interval, widened by 1% on each side for float32's rounding
  of the factors and of the products, stays inside float32's normal range
  [1.2e-38, 3.4e38]. Then no product underflows (XLA:CPU flushes
  subnormals to zero) or overflows, each float32 product of B factors
  carries a relative rounding error of at most (B - 1) * 2^-24, and
  log(product) equals the sum of the B logs to within (B - 1) * 6e-8
  absolute: the same order as the rounding of the factors themselves, so
  the result equals the per-factor sum of logs to float32 precision.

  Args:
    min_factor: a lower bound of every factor, > 0.
    max_factor: an upper bound of every factor.

  Returns:
    B >= 1.
  """
  if not 0.0 < min_factor <= max_factor:
    raise ValueError(f"factor bounds [{min_factor}, {max_factor}] must be "
                     "positive and ordered")
  info = np.finfo(np.float32)
  lo, hi = 0.99 * min_factor, 1.01 * max_factor
  block = _MAX_PRODUCT_BLOCK
  if lo < 1.0:  # lo^B >= tiny  <=>  B <= log(tiny) / log(lo).
    block = min(block, int(math.log(float(info.tiny)) / math.log(lo)))
  if hi > 1.0:  # hi^B <= max  <=>  B <= log(max) / log(hi).
    block = min(block, int(math.log(float(info.max)) / math.log(hi)))
  return max(block, 1)


def _product_of_factors(q: jax.Array, idx: jax.Array, offset: jax.Array,
                        scale: jax.Array, start: Any, count: int
                        ) -> jax.Array:
  """prod_{j = start}^{start + count - 1} (offset_j + scale_j q[idx[:, j]]).

  One gathered row of q per neuron and position, (C, T); XLA fuses the
  count gathers, the multiply-adds and the products into one loop.
  """
  product = None
  for i in range(count):
    j = start + i
    factor = offset[j] + scale[j] * q[idx[:, j]]
    product = factor if product is None else product * factor
  return product


@functools.partial(jax.jit, static_argnums=(1,))
def apply_prior(log_likelihood: jax.Array, lam: float) -> jax.Array:
  """S = L - lam * log_prior(L), (K, M) from the (K, M) L of all neurons.

  Its own program, run on one device by every path (one device, several,
  several processes), so the prior rounds the same way in each and
  near-tied concepts keep their order.
  """
  return log_likelihood - lam * log_prior(log_likelihood)


def _sum_log_factors(q: jax.Array, idx: jax.Array, offset: jax.Array,
                     scale: jax.Array, block: int) -> jax.Array:
  """sum_j log(offset_j + scale_j * q[idx[:, j]]), for a chunk of neurons.

  Walks the top_k positions in blocks of `block` (balanced so the last
  block is not much shorter): each step gathers one row of q per neuron
  and position, multiplies the block's factors and takes one log, so only
  (chunk, T) arrays are live and no (chunk, top_k, T) tensor is built.

  Args:
    q: (N, T) per-image concept probabilities (a tile of concepts).
    idx: (C, top_k) int32 image indices of each neuron's top images.
    offset: (top_k,) per-position offset.
    scale: (top_k,) per-position scale.
    block: factors per log, from product_block_size (products stay normal).

  Returns:
    (C, T) float32 sums of logs.
  """
  c, top_k = idx.shape
  offset, scale = jnp.asarray(offset), jnp.asarray(scale)
  block = min(block, top_k)
  block = -(-top_k // -(-top_k // block))  # Balanced: same number of logs.
  full, rest = divmod(top_k, block)

  def step(b, acc):
    return acc + jnp.log(_product_of_factors(q, idx, offset, scale,
                                             b * block, block))

  # The shorter last block starts the sum: as a separate addition after
  # the loop, XLA fuses it into the in-place update of the output and runs
  # it on one thread, ~2x slower in total.
  if rest:
    acc = jnp.log(_product_of_factors(q, idx, offset, scale, full * block,
                                      rest))
  else:
    acc = jnp.zeros((c, q.shape[1]), jnp.float32)
  return jax.lax.fori_loop(0, full, step, acc)


def _softmax_rows(p: jax.Array, a: float
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The parts of Q = softmax(a P, axis=1) that (soft_)wpmi keep.

  Q[i, m] = exp(a P[i, m] - shift[i]) * inv[i] with shift = max_m a P[i, m]
  and inv = 1 / sum_m exp(a P[i, m] - shift[i]): jax.nn.softmax's values
  (a multiply by the reciprocal instead of a divide, within one rounding).
  Storing the two (N,) vectors instead of Q saves writing an (N, M) array:
  on XLA:CPU a fresh 400 MB output costs ~0.17 s of page faults alone,
  more than the exps; each tile of Q is recomputed from P where it is used
  (_map_q_tiles). 0 <= Q <= 1: shift is the row's largest a P (float32
  rounding is monotonic, so no a P[i, m] - shift[i] is positive) and
  inv <= 1 (the largest term of the sum is exp(0) = 1).

  Args:
    p: (N, M) concept activations.
    a: softmax temperature multiplier.

  Returns:
    (P, shift (N,), inv (N,)).
  """
  # max_m a P[i, m] = a * max_m P[i, m] exactly (float32 rounding is
  # monotonic; min for a < 0). Taking it from P keeps XLA from writing
  # a * P as an (N, M) array that both reductions would read.
  shift = a * (jnp.max(p, axis=1) if a >= 0 else jnp.min(p, axis=1))
  total = jnp.sum(jnp.exp(a * p - shift[:, None]), axis=1)
  return p, shift, 1.0 / total


def _q_tile_width(num_images: int, num_concepts: int) -> int:
  """Concepts per tile of Q: ~_Q_TILE_BYTES, a multiple of 128, <= M."""
  width = max(_MIN_Q_TILE, _Q_TILE_BYTES // (4 * num_images) // 128 * 128)
  return min(width, num_concepts)


def _map_q_tiles(fn: Callable[[jax.Array], jax.Array],
                 ctx: tuple[jax.Array, jax.Array, jax.Array], a: float,
                 tile: int, rows: int) -> jax.Array:
  """[fn(Q[:, t]) for concept tiles t], concatenated: (rows, M).

  Each tile of Q (N x tile) is computed from P and the row statistics of
  _softmax_rows, used by fn (gathers of its rows stay in cache) and
  dropped. M not divisible by tile: the last, narrower tile is a separate
  static slice (no padded copy of P).
  """
  p, shift, inv = ctx
  m = p.shape[1]
  full = m // tile

  def q_tile(p_tile):
    return jnp.exp(a * p_tile - shift[:, None]) * inv[:, None]

  def step(t, out):
    p_tile = jax.lax.dynamic_slice_in_dim(p, t * tile, tile, axis=1)
    return jax.lax.dynamic_update_slice_in_dim(out, fn(q_tile(p_tile)),
                                               t * tile, axis=1)

  out = jax.lax.fori_loop(0, full, step, jnp.zeros((rows, m), jnp.float32))
  if m % tile:
    out = out.at[:, full * tile:].set(fn(q_tile(p[:, full * tile:])))
  return out


def _top_indices(a_chunk: jax.Array, top_k: int) -> jax.Array:
  """(chunk, top_k) int32 indices of each row's top_k values, descending.

  The optimization barrier keeps XLA from folding the static column slices
  of the last product block into the sort that top_k lowers to; folded,
  XLA:CPU no longer recognises the sort as a top-k and fully sorts every
  row (a chunk x N sort, the largest cost of a kernel call at N = 5000).
  """
  _, idx = jax.lax.top_k(a_chunk, top_k)
  return jax.lax.optimization_barrier(idx)


def _soft_wpmi_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                      ctx: tuple[jax.Array, jax.Array, jax.Array], *,
                      a: float, top_k: int, p_start: float, p_end: float,
                      eps: float, block: int, tile: int) -> jax.Array:
  """L[k, m] = sum_j log(1 + p_j (Q[I_kj, m] - 1) + eps), (chunk, M)."""
  del neuron_ids
  idx = _top_indices(a_chunk, top_k)
  # 1 + p_j (Q - 1) + eps = (1 - p_j + eps) + p_j Q. The per-position
  # constants are computed in float64 on the host and rounded once: traced,
  # XLA's simplifier rewrites (1 - p) + eps as (1 + eps) - p, and the
  # float32 constant 1 + eps is 1 + 1.19e-7 (at p_start = 1 the offset
  # becomes 1.19e-7 instead of 1e-7, 0.18 per factor in log space).
  p = p_start - (np.arange(top_k) / top_k) * (p_start - p_end)  # (top_k,)
  offset = ((1.0 - p) + eps).astype(np.float32)
  scale = p.astype(np.float32)
  return _map_q_tiles(
      lambda q: _sum_log_factors(q, idx, offset, scale, block), ctx, a,
      tile, idx.shape[0])


def _wpmi_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                 ctx: tuple[jax.Array, jax.Array, jax.Array], *, a: float,
                 top_k: int, eps: float, block: int, tile: int
                 ) -> jax.Array:
  """L[k, m] = sum_j log(Q[I_kj, m] + eps), (chunk, M)."""
  del neuron_ids
  idx = _top_indices(a_chunk, top_k)
  offset = np.full((top_k,), eps, np.float32)
  scale = np.ones((top_k,), np.float32)
  return _map_q_tiles(
      lambda q: _sum_log_factors(q, idx, offset, scale, block), ctx, a,
      tile, idx.shape[0])


_COLUMN_BLOCK = 16


def _column_reduce(x: jax.Array, fn: Callable[[jax.Array], jax.Array],
                   op: Callable[[jax.Array, jax.Array], jax.Array],
                   init: float, reduce: Callable[..., jax.Array]
                   ) -> jax.Array:
  """reduce(fn(x), axis=0) with op combining blocks of _COLUMN_BLOCK rows.

  XLA:CPU reduces over the major axis of a large array ~25x slower than
  over the minor one; combining blocks of _COLUMN_BLOCK rows element-wise
  into a (_COLUMN_BLOCK, M) accumulator first keeps the work vectorized
  along M.
  """
  n, m = x.shape
  blocks = n // _COLUMN_BLOCK

  def body(i, acc):
    return op(acc, fn(jax.lax.dynamic_slice_in_dim(x, i * _COLUMN_BLOCK,
                                                   _COLUMN_BLOCK, 0)))

  if not blocks:  # N < _COLUMN_BLOCK: no full block to slice.
    return reduce(fn(x), axis=0)
  acc = jax.lax.fori_loop(0, blocks, body,
                          jnp.full((_COLUMN_BLOCK, m), init, jnp.float32))
  out = reduce(acc, axis=0)
  if n % _COLUMN_BLOCK:
    out = op(out, reduce(fn(x[blocks * _COLUMN_BLOCK:]), axis=0))
  return out


def column_sums(x: jax.Array, fn: Callable[[jax.Array], jax.Array] = None
                ) -> jax.Array:
  """sum_n fn(x)[n, :] for an (N, M) array, as an (M,) float32 vector."""
  return _column_reduce(x, fn or (lambda v: v), jnp.add, 0.0, jnp.sum)


def column_max(x: jax.Array) -> jax.Array:
  """max_n x[n, :] for an (N, M) array, as an (M,) float32 vector."""
  return _column_reduce(x, lambda v: v, jnp.maximum, -jnp.inf, jnp.max)


def _inverse_norms(x: jax.Array, min_norm: float,
                   fn: Callable[[jax.Array], jax.Array] = lambda v: v
                   ) -> jax.Array:
  """1 / max(||fn(x)[:, m]||, min_norm) for each column m of (N, M) x
  (fn element-wise; fn(x) is never stored whole)."""
  def square(v):
    y = fn(v)
    return y * y
  return 1.0 / jnp.maximum(jnp.sqrt(column_sums(x, square)), min_norm)


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


def _cube(x: jax.Array) -> jax.Array:
  return x * x * x


def _row_centered_cubed(x: jax.Array) -> jax.Array:
  return _cube(x - jnp.mean(x, axis=1, keepdims=True))


# Bytes of P's centred cube made at a time by cos_similarity_cubed's scores
# (N x width float32): small enough to stay near the cache between being
# made and being multiplied.
_CUBED_BLOCK_BYTES = 16 * 2**20


def _cubed_block_width(n: int, m: int) -> int:
  """Concepts per block: a multiple of 128 (at 10000 x 512 x 20000 a width
  of 419 took 1.39x a matmul's time, 384 or 1024 1.2x), or all M."""
  width = max(128, _CUBED_BLOCK_BYTES // (4 * n) // 128 * 128)
  return int(min(m, width))


def _cos_cubed_prepare(p: jax.Array, min_norm: float
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(P, column means (M,), 1 / max(||(P - mean)^3||, min_norm) (M,)).

  The (N, M) centred cube itself is never stored: the scores make it a
  block of concepts at a time (an N x M array less; stored, it made the
  kernel 1.9 s against a 1.0 s matrix product at 10000 x 512 x 20000).
  """
  mean = column_sums(p) / p.shape[0]
  return p, mean, _inverse_norms(p, min_norm, lambda v: _cube(v - mean[None]))


def _cos_cubed_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                      ctx: tuple[jax.Array, jax.Array, jax.Array], *,
                      min_norm: float, width: int) -> jax.Array:
  """a_hat @ ((P - mean)^3 * inv) for (chunk, N) a_chunk, by blocks of
  `width` concepts."""
  del neuron_ids
  p, mean, inv = ctx
  a_hat = _row_normalize(_row_centered_cubed(a_chunk), min_norm)

  def block(start, size):
    y = _cube(jax.lax.dynamic_slice_in_dim(p, start, size, 1)
              - jax.lax.dynamic_slice_in_dim(mean, start, size, 0)[None])
    return _scaled_dot(
        a_hat, (y, jax.lax.dynamic_slice_in_dim(inv, start, size, 0)))

  m = p.shape[1]
  full = m // width
  out = jnp.zeros((a_hat.shape[0], m), jnp.float32)
  out = jax.lax.fori_loop(
      0, full, lambda i, o: jax.lax.dynamic_update_slice_in_dim(
          o, block(i * width, width), i * width, 1), out)
  if m % width:
    out = out.at[:, full * width:].set(block(full * width, m % width))
  return out


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


def _numpy_stable_argsort(x: np.ndarray) -> np.ndarray:
  """jnp.argsort(x, axis=-2) on XLA:CPU (stable), by numpy.

  Each value becomes a 64-bit key: the float's bits mapped to an unsigned
  integer of the same order (negative floats flipped; -0.0 and subnormals
  made 0.0 first, since XLA:CPU's sort holds them equal to 0.0: it flushes
  subnormals), then its position in the low 32 bits, which makes equal
  values keep their order. numpy sorts 64-bit integers with SIMD kernels
  (x86-simd-sort on AVX2/AVX-512 CPUs), far faster than XLA:CPU's
  comparator sort.

  Args:
    x: (..., n, M) float32, no NaN.

  Returns:
    (..., n, M) int32: order[..., r, m] is the position along n of the
    r-th smallest x[..., :, m].
  """
  x = np.asarray(x, np.float32)
  x = np.where(np.abs(x) < _TINY, np.float32(0.0), x)
  bits = np.swapaxes(x, -1, -2).view(np.uint32)  # (..., M, n)
  flip = np.where(bits >> 31 == 1, np.uint32(0xFFFFFFFF), np.uint32(1 << 31))
  keys = (bits ^ flip).astype(np.uint64) << np.uint64(32)
  keys |= np.arange(x.shape[-2], dtype=np.uint64)
  keys.sort(axis=-1)
  order = (keys & np.uint64(0xFFFFFFFF)).astype(np.int32)
  return np.ascontiguousarray(np.swapaxes(order, -1, -2))


def _stable_argsort_rows(x: jax.Array) -> jax.Array:
  """jnp.argsort(x, axis=1) of a (c, n, M) float32 array, no NaN.

  On a CPU the sort runs in numpy (_numpy_stable_argsort, the same
  result); elsewhere it is XLA's sort.
  """
  def on_cpu(v):
    return jax.pure_callback(
        _numpy_stable_argsort, jax.ShapeDtypeStruct(v.shape, jnp.int32), v,
        vmap_method="expand_dims")

  return jax.lax.platform_dependent(
      x, cpu=on_cpu, default=lambda v: jnp.argsort(v, axis=1))


def _rank_reorder_scores(a_chunk: jax.Array, neuron_ids: jax.Array,
                         p: jax.Array, *, key: jax.Array, n: int,
                         power: float, scale_p: float) -> jax.Array:
  """rank_reorder scores for a chunk of neurons, (chunk, M)."""
  top, idx = jax.lax.top_k(a_chunk, n)  # (c, n) descending.
  ascending = top[:, ::-1]
  p_top = p[idx]  # (c, n, M)
  # order[c, r, m]: the image (position in top-n) with the r-th smallest P.
  order = _stable_argsort_rows(p_top)
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


# Live bytes per neuron and concept of a tile of _sum_log_factors: the
# accumulator, the running product, one gathered row and one factor.
_LOG_SUM_BYTES_PER_NEURON = 4 * 4


def _check_eps(eps: float) -> None:
  if not eps >= _MIN_EPS:
    raise ValueError(f"eps={eps} must be >= {_MIN_EPS} (it keeps every "
                     "factor of the log positive)")


def _log_sum_chunk_size(n: int, k: int, m: int, tile: int,
                        chunk_size: int | None) -> int:
  # Per neuron: its (M,) output row and the live (tile,) rows of
  # _sum_log_factors.
  return _chunk_size_for(4 * m + _LOG_SUM_BYTES_PER_NEURON * tile, k,
                         chunk_size)

def plan_soft_wpmi(n, k, m, chunk_size, *, top_k=100, a=10.0, lam=1.0,
                    p_start=0.998, p_end=0.97, eps=1e-7):
  top_k = _check_top_k(top_k, n)
  for nm, v in (("p_start", p_start), ("p_end", p_end)):
    if not 0.0 <= v <= 1.0:
      raise ValueError(f"{nm}={v} must be in [0, 1]")
  _check_eps(eps)
  # Factors (1 - p_j + eps) + p_j Q with 0 <= Q <= 1 and p_j between
  # p_start and p_end: in [1 - max(p) + eps, 1 + eps] (the offsets are
  # rounded to float32 once, well within product_block_size's margin).
  block = product_block_size(1.0 - max(p_start, p_end) + eps, 1.0 + eps)
  tile = _q_tile_width(n, m)
  return KernelPlan(
      prepare=functools.partial(_softmax_rows, a=float(a)),
      neuron_scores=functools.partial(
          _soft_wpmi_scores, a=float(a), top_k=top_k, p_start=float(p_start),
          p_end=float(p_end), eps=float(eps), block=block, tile=tile),
      lam=float(lam),
      chunk_size=_log_sum_chunk_size(n, k, m, tile, chunk_size))


def plan_wpmi(n, k, m, chunk_size, *, top_k=28, a=2.0, lam=0.6, eps=1e-7):
  top_k = _check_top_k(top_k, n)
  _check_eps(eps)
  # Factors Q + eps with 0 <= Q <= 1: in [eps, 1 + eps].
  block = product_block_size(eps, 1.0 + eps)
  tile = _q_tile_width(n, m)
  return KernelPlan(
      prepare=functools.partial(_softmax_rows, a=float(a)),
      neuron_scores=functools.partial(
          _wpmi_scores, a=float(a), top_k=top_k, eps=float(eps), block=block,
          tile=tile),
      lam=float(lam),
      chunk_size=_log_sum_chunk_size(n, k, m, tile, chunk_size))


def plan_cos(n, k, m, chunk_size):
  return KernelPlan(prepare=_cos_prepare, neuron_scores=_cos_scores,
                    lam=None,
                    chunk_size=_chunk_size_for(n * 4 * 4, k, chunk_size))


def plan_cos_cubed(n, k, m, chunk_size, *, min_norm=1e-3):
  if not min_norm > 0:
    raise ValueError(f"min_norm={min_norm} must be > 0")
  min_norm = float(min_norm)
  return KernelPlan(
      prepare=functools.partial(_cos_cubed_prepare, min_norm=min_norm),
      neuron_scores=functools.partial(
          _cos_cubed_scores, min_norm=min_norm,
          width=_cubed_block_width(n, m)),
      lam=None,
      chunk_size=_chunk_size_for(n * 4 * 4, k, chunk_size))


def check_key(key: Any) -> None:
  if key is None:
    raise ValueError("rank_reorder needs key=jax.random.key(seed) for its "
                     "baseline permutations")
  if not isinstance(key, jax.Array) or not jnp.issubdtype(
      key.dtype, jax.dtypes.prng_key):
    raise ValueError("key must be a jax.random key, e.g. jax.random.key(0); "
                     f"got {key!r}")


def plan_rank_reorder(n, k, m, chunk_size, *, key=None, top_fraction=0.05,
                       p=3.0, scale_p=0.5):
  check_key(key)
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


def plan_context(plan: KernelPlan, p: jax.Array, key: jax.Array) -> Any:
  """The ctx passed to plan.neuron_scores (key added for keyed kernels)."""
  ctx = plan.prepare(p)
  return (ctx, key) if plan.uses_key else ctx
