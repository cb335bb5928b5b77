"""Permutation p-values of neuron labels and Benjamini-Hochberg q-values.

`label_pvalues` works on one layer's A (N, K) and P (N, M) and re-runs only
the similarity kernel (jax_dissect.similarity's plans), jitted and chunked
over neurons: memory O(N*M + chunk*M + R*M + K*M) (R pool null neurons).

Statistic: the neuron's observed label score T_k = S[k, label_k] (label_k
= argmax_m S[k, m] unless labels are given). A null draw re-runs the run's
kernel with the image pairing broken and takes the neuron's best score
max_m S[k, m]; with B draws, p = (1 + #{null >= T_k}) / (1 + B), and
`bh_qvalues` gives Benjamini-Hochberg q-values over the layer. A neuron
whose activations are constant over images gets p = 1 (a permutation
leaves it unchanged, so every null score equals the observed one).

null="neuron" (default): the null of neuron k permutes column k of A alone
(equivalently P's rows against that neuron), all other neurons keep their
pairing with P. H0_k: neuron k's activations are exchangeable over images
independently of P and of the other neurons.
- soft_wpmi, wpmi (kernels registered with a top_k, `Kernel.uses_top_k`):
  a neuron's likelihood L[k, :] depends on A only through its ordered top_k
  image list, which under a uniform permutation is a
  uniformly random ordered subset of the images, the same distribution for
  every neuron. So a pool of R null neurons (the kernel on R rows of
  random keys over the images, sharing Q = softmax(a P) with the observed
  run) serves all neurons: neuron k uses B of the R pool likelihoods x_r
  (drawn without replacement; disjoint between neurons when R >= K*B).
  The layer prior couples neurons; with column k permuted it is exactly
  prior[m] = logaddexp(c_k[m], x_r[m]) - log K with c_k = log sum_{j!=k}
  exp L[j, :] (the other neurons' real likelihoods, a leave-one-out
  logsumexp), so a null score is
    max_m (1 - lam) x_r[m] + lam * log_sigmoid(x_r[m] - c_k[m]) + lam log K
  (for lam = 1: log_sigmoid(max_m (x_r - c_k)[m]) + log K).
  Exact: each null score has exactly the distribution of the kernel
  re-run with neuron k's column permuted, so each p-value is exactly valid.
  A neuron that shares its concept with other neurons (or duplicates one)
  keeps them in c_k, so its observed score pays the prior's penalty for a
  shared concept (log 2 for two such neurons at lam = 1) and its p-value is
  larger (conservative), as the kernel itself ranks such labels lower.
  Approximated: (1) neurons share pool draws when R < K*B, so p-values of
  different neurons are dependent (conditional on the pool, the null CDF
  is the pool's empirical CDF, off by about 1.4/sqrt(R) at 95%); (2) when
  activations tie inside a neuron's top_k, the kernel orders the tied
  images by index, the pool orders them at random; (3) two of a pool row's
  random keys (30 bits) tie with probability < N**2 / 2**31 (4.7% at
  N = 10,000), one of them among the row's top_k + 1 about 2 (top_k + 1) / N
  times as often (0.1%), and top_k then orders those two images by index.
  Cost: one labeling (observed L), R/K labelings' likelihood part (the
  pool; R = 4096 by default) and K*B*M element-wise operations (a
  subtraction and a max for lam = 1; an exp and a log1p more otherwise).
- cos_similarity, cos_similarity_cubed, rank_reorder: no prior, so a
  neuron's score does not depend on other neurons; but it depends on its
  activation values, not only on their order, so no pool can serve all
  neurons. Exact: B re-runs of the kernel on A with its rows permuted (one
  permutation per draw, shared by all neurons, which gives each neuron
  exactly its own column-permutation null). Cost: B labelings.

null="layer": the rows of A are permuted for all neurons at once (the
issue's "permute the rows of P against A"; H0: the layer is independent of
P), B exact re-runs, cost B labelings. For kernels without a prior it is
the same null as "neuron". For (soft_)wpmi each neuron's null then depends
on the whole layer through the prior: where many neurons are selective
for concepts, the real prior differs from the null priors and pure-noise
neurons get p-values that are not uniform (tests/analyses/scoring/test_scoring.py shows
it), which is why "neuron" is the default.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jax_dissect import similarity
from jax_dissect.similarity import kernels

# Default number of pool null neurons of the pooled (soft_)wpmi null.
DEFAULT_POOL_SIZE = 4096
NULLS = ("neuron", "layer")


# ----------------------------------------------------------------------------
# Label p-values.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelPValues:
  """Permutation p-values of a layer's labels.

  Attributes:
    labels: int32 (K,) the label tested (argmax of S unless given).
    scores: float32 (K,) observed score S[k, labels[k]].
    null_scores: float32 (K, B) each neuron's best score in each null draw.
    p_values: float64 (K,) (1 + #{null >= score}) / (1 + B); 1 for neurons
      constant over images.
    q_values: float64 (K,) Benjamini-Hochberg q-values over the layer.
    null: "neuron" or "layer".
    pooled: True when the null came from a pool of null neurons.
  """
  labels: np.ndarray
  scores: np.ndarray
  null_scores: np.ndarray
  p_values: np.ndarray
  q_values: np.ndarray
  null: str
  pooled: bool


def bh_qvalues(p_values: Any) -> np.ndarray:
  """Benjamini-Hochberg q-values: q_(i) = min_{j >= i} m p_(j) / j, <= 1.

  Args:
    p_values: (K,) p-values in [0, 1]; NaN entries are ignored (not counted
      in m) and get NaN.

  Returns:
    (K,) float64 q-values.
  """
  p = np.asarray(p_values, np.float64)
  if p.ndim != 1:
    raise ValueError(f"p_values must be 1-D; got shape {p.shape}")
  ok = ~np.isnan(p)
  if np.any((p[ok] < 0) | (p[ok] > 1)):
    raise ValueError("p_values must lie in [0, 1]")
  q = np.full(p.shape, np.nan)
  vals = p[ok]
  m = vals.size
  if not m:
    return q
  order = np.argsort(vals, kind="stable")
  ranked = vals[order] * m / np.arange(1, m + 1)
  ranked = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
  out = np.empty(m)
  out[order] = ranked
  q[ok] = out
  return q


def _map_rows(fn, rows: Any, chunk: int) -> jax.Array:
  """fn over chunks of `chunk` rows of rows (arrays or a tuple of arrays).

  Rows are zero-padded to a multiple of chunk; fn maps a chunk to an array
  whose leading axis is the chunk. Returns the (R, ...) stacked results.
  """
  leaves = jax.tree_util.tree_leaves(rows)
  r = leaves[0].shape[0]
  num_chunks = -(-r // chunk)
  pad = num_chunks * chunk - r

  def split(x):
    x = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
    return x.reshape((num_chunks, chunk) + x.shape[1:])

  out = jax.lax.map(fn, jax.tree_util.tree_map(split, rows))
  return out.reshape((num_chunks * chunk,) + out.shape[2:])[:r]


@functools.partial(jax.jit, static_argnums=(0,))
def _context(plan, p, key):
  return kernels.plan_context(plan, p, key)


@functools.partial(jax.jit, static_argnums=(0,))
def _scores(plan, act, ctx):
  """(K, M) S and L of the kernel (L before the prior)."""
  ll = kernels.map_neuron_chunks(
      lambda x, ids: plan.neuron_scores(x, ids, ctx), act, plan.chunk_size)
  if plan.lam is None:
    return ll, ll
  return ll - plan.lam * kernels.log_prior(ll), ll


@functools.partial(jax.jit, static_argnums=(0,))
def _best_after_permutation(plan, act, ctx, perm):
  """(K,) best score of each neuron with the rows of A permuted."""
  s, _ = _scores(plan, act[perm], ctx)
  return jnp.max(s, axis=1)


def _random_ranks(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Random float32 keys whose order is a uniformly random permutation.

  30 random bits plus the smallest normal float32's bit pattern, read as a
  float32: 2**30 distinct positive normal values, ordered as the bits (no
  denormals, which a CPU may flush to zero). Two keys of a row of n tie with
  probability < n**2 / 2**31 (top_k then orders them by index). float32
  top_k is ~30x faster than integer top_k or jax.random.permutation on CPU.
  """
  bits = jax.random.bits(key, shape, jnp.uint32) >> 2
  return jax.lax.bitcast_convert_type(bits + jnp.uint32(0x00800000),
                                      jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _pool_likelihoods(plan, ctx, key, num_images, pool_size):
  """(R, M) L of R null neurons: the kernel on rows of random keys.

  A row's top_k list is a uniformly random ordered subset of the images;
  pool neuron r's row depends only on (key, r).
  """
  def one_chunk(ids):
    rows = jax.vmap(lambda i: _random_ranks(jax.random.fold_in(key, i),
                                            (num_images,)))(ids)
    return plan.neuron_scores(rows, ids, ctx)
  return _map_rows(one_chunk, jnp.arange(pool_size), plan.chunk_size)


@jax.jit
def leave_one_out_logsumexp(ll: jax.Array) -> jax.Array:
  """c[k, m] = log sum_{j != k} exp L[j, m], (K, M), without cancellation.

  With m1, m2 the largest and second largest L[:, m] and t = sum over the
  non-argmax rows of exp(L - m2) (>= 1 if K >= 2): the argmax row gets
  m2 + log t; any other row m1 + log1p(exp(m2 - m1) t - exp(L - m1)), whose
  log1p argument is >= 0 (row k is one of t's terms). K = 1 gives -inf.
  """
  k, m = ll.shape
  # Column reductions walk the rows (vectorized along M): XLA:CPU reduces
  # over the major axis of a large array many times slower.

  def top_two(i, carry):
    m1, m2, top = carry
    row = ll[i]
    above = row > m1  # A tie with m1 keeps the first row as the argmax.
    return (jnp.where(above, row, m1),
            jnp.where(above, m1, jnp.maximum(m2, row)),
            jnp.where(above, i, top))

  m1, m2, top = jax.lax.fori_loop(
      0, k, top_two, (jnp.full((m,), -jnp.inf), jnp.full((m,), -jnp.inf),
                      jnp.zeros((m,), jnp.int32)))
  m2_safe = jnp.where(jnp.isfinite(m2), m2, m1)
  t = jax.lax.fori_loop(
      0, k, lambda i, acc: acc + jnp.where(top == i, 0.0,
                                           jnp.exp(ll[i] - m2_safe)),
      jnp.zeros((m,), jnp.float32))
  is_top = jnp.arange(k)[:, None] == top[None, :]
  top_row = m2_safe + jnp.log(t)
  other = m1 + jnp.log1p(jnp.maximum(
      jnp.exp(m2_safe - m1) * t - jnp.exp(ll - m1), 0.0))
  return jnp.where(is_top, top_row, other)


def null_best_score(x: jax.Array, c: jax.Array, lam: float,
                    num_neurons: int) -> jax.Array:
  """A neuron's best (soft_)wpmi score with its likelihood replaced by x.

  S[m] = x[m] - lam * (logaddexp(c[m], x[m]) - log K)
       = (1 - lam) x[m] + lam * log_sigmoid(x[m] - c[m]) + lam * log K.

  Args:
    x: (..., M) the neuron's likelihood L (before the prior).
    c: (..., M) log sum over the layer's other neurons of exp L
      (`leave_one_out_logsumexp`).
    lam: the kernel's prior weight.
    num_neurons: K, the layer's neuron count.

  Returns:
    (...) max over concepts of S.
  """
  if lam == 1.0:  # log_sigmoid is increasing: one transcendental per row.
    best = jax.nn.log_sigmoid(jnp.max(x - c, axis=-1))
  elif lam == 0.0:
    best = jnp.max(x, axis=-1)
  else:
    best = jnp.max((1.0 - lam) * x + lam * _log_sigmoid(x - c), axis=-1)
  return best + lam * math.log(num_neurons)


def _log_sigmoid(d: jax.Array) -> jax.Array:
  """log sigmoid(d), stable; ~1.7x faster than jax.nn.log_sigmoid on CPU."""
  return jnp.minimum(d, 0.0) - jnp.log1p(jnp.exp(-jnp.abs(d)))


@functools.partial(jax.jit, static_argnames=("lam", "num_neurons", "chunk"))
def _pooled_null(pool_ll: jax.Array, loo: jax.Array, draws: jax.Array, *,
                 lam: float, num_neurons: int, chunk: int) -> jax.Array:
  """(K, B) null best scores from pool likelihoods (R, M), c = loo (K, M)."""
  num_draws = draws.shape[1]

  def one_chunk(xs):
    c, d = xs  # (chunk, M), (chunk, B)

    def body(j, out):
      return out.at[:, j].set(null_best_score(pool_ll[d[:, j]], c, lam,
                                              num_neurons))

    return jax.lax.fori_loop(0, num_draws, body,
                             jnp.zeros((c.shape[0], num_draws), jnp.float32))

  return _map_rows(one_chunk, (loo, draws), chunk)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _pool_draws(key: jax.Array, num_neurons: int, num_draws: int,
                pool_size: int) -> jax.Array:
  """(K, B) pool indices: distinct per neuron; disjoint if R >= K * B."""
  if pool_size >= num_neurons * num_draws:
    order = jax.lax.top_k(_random_ranks(key, (pool_size,)),
                          num_neurons * num_draws)[1]
    return order.reshape(num_neurons, num_draws)
  return jax.lax.top_k(_random_ranks(key, (num_neurons, pool_size)),
                       num_draws)[1]


@jax.jit
def _constant_columns(act: jax.Array) -> jax.Array:
  return jnp.max(act, axis=0) == jnp.min(act, axis=0)


def _check_positive_int(value: Any, name: str) -> int:
  if (not isinstance(value, (int, np.integer)) or isinstance(value, bool) or
      value < 1):
    raise ValueError(f"{name} must be an int >= 1; got {value!r}")
  return int(value)


def label_pvalues(activations: Any, concept_activations: Any,
                  similarity_fn: str = "soft_wpmi", *,
                  num_permutations: int = 100, seed: int = 0,
                  kernel_kwargs: dict[str, Any] | None = None,
                  labels: Any = None, null: str = "neuron",
                  pool_size: int | None = None,
                  chunk_size: int | None = None) -> LabelPValues:
  """Permutation p-values of each neuron's label (see the module docstring).

  Args:
    activations: (N, K) activations.
    concept_activations: (N, M) P.
    similarity_fn: the run's kernel, a registered name (similarity.names()).
    num_permutations: B >= 1 null draws per neuron.
    seed: seed of the null (jax.random) and of a keyed kernel's key when
      kernel_kwargs has none (similarity.fit_hyper).
    kernel_kwargs: the kernel's hyper-parameters (as the run used them); a
      top_k larger than N is lowered to N, as similarity.compute does.
    labels: optional (K,) int labels to test; default argmax_m S[k, m].
    null: "neuron" (default) or "layer".
    pool_size: pool null neurons R of the pooled null (soft_wpmi, wpmi with
      null="neuron"); default min(K * B, max(B, DEFAULT_POOL_SIZE)); >= B.
    chunk_size: neurons per chunk of the kernel.

  Returns:
    LabelPValues with (K,) labels, scores, p_values, q_values and (K, B)
    null_scores.
  """
  kernel = similarity.get_kernel(similarity_fn)
  num_draws = _check_positive_int(num_permutations, "num_permutations")
  if null not in NULLS:
    raise ValueError(f"unknown null {null!r}; allowed: {list(NULLS)}")
  act, p = similarity.validate_inputs(activations, concept_activations)
  n, k = act.shape
  m = p.shape[1]
  hyper = similarity.fit_hyper(similarity_fn, n, kernel_kwargs, seed)
  # Cached per shapes and hyper-parameters; the key (rank_reorder's, or a
  # dummy) is passed at run time.
  plan, kernel_key = similarity.resolve_plan(similarity_fn, n, k, m,
                                             chunk_size=chunk_size, **hyper)
  pooled = null == "neuron" and kernel.uses_top_k
  if pooled:
    if pool_size is None:
      pool_size = min(k * num_draws, max(num_draws, DEFAULT_POOL_SIZE))
    pool_size = _check_positive_int(pool_size, "pool_size")
    if pool_size < num_draws:
      raise ValueError(f"pool_size={pool_size} must be >= num_permutations="
                       f"{num_draws}")
  if labels is not None:
    labels = np.asarray(labels)
    if (labels.shape != (k,) or not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0 or labels.max() >= m):
      raise ValueError(f"labels must be ({k},) ints in 0..{m - 1}; got shape "
                       f"{labels.shape}, dtype {labels.dtype}")

  ctx = _context(plan, p, kernel_key)
  s, ll = _scores(plan, act, ctx)
  if labels is None:
    labels = jnp.argmax(s, axis=1)
  labels = jnp.asarray(labels, jnp.int32)
  observed = jnp.take_along_axis(s, labels[:, None], axis=1)[:, 0]
  # The stages below each use every core and stream arrays of N*M or R*M
  # floats: dispatched together they ran ~1.7x slower on a 2-core CPU
  # than one after the other, so each waits for the one before.
  observed.block_until_ready()
  del s
  null_key, draw_key = jax.random.split(jax.random.key(seed))
  if pooled:
    pool_ll = _pool_likelihoods(plan, ctx, null_key, n,
                                pool_size).block_until_ready()
    del ctx
    loo = leave_one_out_logsumexp(ll).block_until_ready()
    del ll
    draws = _pool_draws(draw_key, k, num_draws, pool_size)
    null_scores = _pooled_null(pool_ll, loo, draws, lam=plan.lam,
                               num_neurons=k,
                               chunk=int(min(k, _null_chunk(m))))
  else:
    del ll
    null_scores = jnp.stack([
        _best_after_permutation(
            plan, act, ctx,
            jax.random.permutation(jax.random.fold_in(null_key, i), n))
        for i in range(num_draws)], axis=1)
  null_scores = np.asarray(null_scores)
  observed = np.asarray(observed)
  exceed = np.sum(null_scores >= observed[:, None], axis=1)
  p_values = (1.0 + exceed) / (1.0 + num_draws)
  p_values[np.asarray(_constant_columns(act))] = 1.0
  return LabelPValues(labels=np.asarray(labels), scores=observed,
                      null_scores=null_scores, p_values=p_values,
                      q_values=bh_qvalues(p_values), null=null,
                      pooled=pooled)


def _null_chunk(num_concepts: int) -> int:
  """Neurons per chunk of the pooled null: 1 MiB of (chunk, M) float32.

  The chunk's c rows stay in cache while its B pool rows stream past.
  """
  return max(1, 2**20 // (4 * num_concepts))
