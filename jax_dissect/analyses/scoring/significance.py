"""Permutation p-values of neuron labels and Benjamini-Hochberg q-values.

`label_pvalues` works on one layer's A (N, K) and P (N, M) and re-runs only
the similarity kernel (jax_dissect.similarity's plans), jitted and chunked
over neurons: memory O(N*M + chunk*M + R*M + K*M) (R pool null neurons).
docs/significance.md explains the choices for users.

Common to every null
  Images are exchangeable (an i.i.d. probe set). A null draw breaks the
  pairing of activations with P by permuting images. The observed
  statistic T_k is the statistic of neuron k's tested concept (by default
  its argmax over concepts); a null score is the neuron's best statistic
  over all M concepts in one draw, so picking the best of M concepts is
  paid for. With B draws, p = (1 + #{null >= T_k}) / (1 + B); under the
  null's H0 and with the default tested concept, p is uniform on
  {1, ..., B + 1} / (B + 1) (exactly, up to the approximations listed);
  a given concept whose statistic is below the argmax's gets a larger p
  (valid, conservative). `bh_qvalues` gives Benjamini-Hochberg q-values
  over the layer. A neuron whose activations are constant over images gets
  p = 1 (nothing to pair).

null="neuron" (default): H0_k, neuron k's activations are independent of
P. Nothing is assumed about the other neurons: they may correlate with
neuron k and relate to P. The null permutes column k of A alone, so the
statistic must depend on column k and P only (a statistic that reads the
other neurons turns the test into one of independence from them as well,
see "neuron_in_layer").
- soft_wpmi, wpmi (kernels with a top_k, `Kernel.uses_top_k`): the layer
  prior of the kernel (S = L - lam * prior, prior = the layer's log-mean-
  exp of L per concept) reads every neuron, so the statistic replaces it by
  a per-concept standardization of the likelihood L (the kernel with
  lam = 0):
    Z[k, m] = (L[k, m] - mu[m]) / sigma[m],
  mu, sigma the mean and standard deviation of L[., m] over a reference
  set of R_ref null neurons (the kernel run on rows of random keys, whose
  top_k lists are uniformly random ordered subsets of the images; R_ref =
  DEFAULT_REFERENCE_SIZE, drawn independently of the null draws). mu and
  sigma depend on P only. Like the prior, mu removes the advantage of
  concepts that are likely for any set of images; sigma puts concepts on
  one scale, so that the null's max over concepts is not dominated by the
  concepts whose likelihood varies most between random image sets (which
  would cost power for the others). A concept with sigma = 0 (Q equal on
  every image) gets Z = 0. The tested concept is argmax_m Z[k, m]: it
  can differ from the run's label argmax_m S[k, m], since the layer prior
  moves labels away from concepts that other neurons share.
  Null: L[k, :] depends on A only through neuron k's ordered top_k list,
  which under H0_k with column k permuted is a uniformly random ordered
  subset of the images, the same distribution for every neuron. So a pool
  of R null neurons (like the reference, with another key) serves all
  neurons: neuron k's B null scores are max_m Z of B pool rows (drawn
  without replacement; disjoint between neurons when R >= K*B). Since mu
  and sigma do not depend on the neuron, one max per pool row serves every
  neuron that draws it.
  Ties: the kernel's top_k puts equal activations in image order, and the
  image order may follow P (an ImageFolder is sorted by class), so a
  neuron that is 0 on most images would look related to the first classes.
  When equal activations of some neuron reach into its top_k, every
  neuron's column is replaced by its ranks with ties in random order
  (independently per neuron), so that its top_k list is, like a pool
  list, uniformly random among tied images.
  Exact: under H0_k, neuron k's Z row and each pool row's are exchangeable,
  so each p-value is exactly valid. Approximated: (1) neurons share pool
  draws when R < K*B, so p-values of different neurons are dependent
  (conditional on the pool, the null CDF is the pool's empirical CDF, off
  by about 1.4/sqrt(R) at 95%); (2) two of a pool row's random keys (30
  bits) tie with probability < N**2 / 2**31 (4.7% at N = 10,000), one of
  them among the row's top_k + 1 about 2 (top_k + 1) / N times as often
  (0.1%), and top_k then orders those two images by index.
  Cost: one labeling's likelihood part (observed L), (R + R_ref) / K
  labelings' (pool and reference; R = 4096 by default), R*M for the pool
  rows' maxima; where ties reach a top_k, a sort of each neuron's N
  activations.
- cos_similarity, cos_similarity_cubed, rank_reorder: no prior, so the
  kernel's own S[k, :] depends on column k and P only and is the
  statistic (the tested concept is the run's label). It depends on the
  activation values, not only on their order, so no pool can serve all
  neurons. Exact: B re-runs of the kernel on A with its rows permuted (one
  permutation per draw, shared by all neurons, which gives each neuron
  exactly its own column-permutation null). Cost: B labelings.

null="neuron_in_layer": H0_k, neuron k's activations are independent of P
and of the layer's other neurons (the default before the standardized
statistic). Statistic: the kernel's S with the layer prior, the tested
concept the run's label argmax_m S[k, m]. The null permutes column k alone
and keeps the others' likelihoods.
- soft_wpmi, wpmi: pooled as above; with column k permuted the prior is
  exactly prior[m] = logaddexp(c_k[m], x_r[m]) - log K with c_k = log
  sum_{j!=k} exp L[j, :] (the other neurons' real likelihoods, a
  leave-one-out logsumexp), so a null score is
    max_m (1 - lam) x_r[m] + lam * log_sigmoid(x_r[m] - c_k[m]) + lam log K
  (for lam = 1: log_sigmoid(max_m (x_r - c_k)[m]) + log K), exactly the
  kernel re-run with column k permuted. Approximations (1) and (2) above,
  and (3): tied activations are ordered by index in the observed top_k, at
  random in the pool. Cost: one labeling, R/K labelings' likelihood part
  and K*B*M element-wise operations.
- the other kernels: the same as null="neuron".
H0_k is false when neuron k correlates with other neurons, whether or not
any neuron relates to P, and real (and random) networks' neurons do: the
neuron shares its top images with its correlated neighbours, so its best
concepts pay their prior penalty (log 2 for a pair of duplicates at
lam = 1) while a permuted column does not. Its p-values are then too
large: median 0.90 and 0.8% at or below 0.05 for soft_wpmi on a random
ResNet-18 over real photos with P independent of it (docs/significance.md,
tests/analyses/scoring/test_significance_calibration.py), and planted concepts lose power.

null="layer": H0, the whole layer is independent of P. The rows of A are
permuted for all neurons at once (correlations between neurons are kept),
B exact re-runs, cost B labelings; the statistic is the kernel's S with
the layer prior and the tested concept the run's label. Each p-value is
valid for this global H0. It is not a test of one neuron: for (soft_)wpmi
each neuron's null depends on the whole layer through the prior, so where
some neurons are selective for concepts, the real prior differs from the
null priors and the unrelated neurons get p-values that are not uniform
(tests/analyses/scoring/test_scoring.py shows it). For kernels without a prior the per-
neuron nulls are those of "neuron".
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

# Default number of pool null neurons of the pooled (soft_)wpmi nulls.
DEFAULT_POOL_SIZE = 4096
# Default number of reference null neurons whose likelihoods standardize L
# (null="neuron" with soft_wpmi, wpmi).
DEFAULT_REFERENCE_SIZE = 1024
NULLS = ("neuron", "neuron_in_layer", "layer")


# ----------------------------------------------------------------------------
# Label p-values.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelPValues:
  """Permutation p-values of a layer's labels.

  Attributes:
    labels: int32 (K,) the concept tested: the argmax of the statistic
      (Z with statistic="standardized", S with statistic="kernel") unless
      labels were given.
    scores: float32 (K,) observed statistic of the tested concept,
      Z[k, labels[k]] or S[k, labels[k]].
    null_scores: float32 (K, B) each neuron's best statistic (max over
      concepts) in each null draw.
    p_values: float64 (K,) (1 + #{null >= score}) / (1 + B); 1 for neurons
      constant over images.
    q_values: float64 (K,) Benjamini-Hochberg q-values over the layer.
    null: "neuron", "neuron_in_layer" or "layer".
    pooled: True when the null came from a pool of null neurons.
    statistic: "standardized" (Z = (L - mean) / std, soft_wpmi and wpmi
      with null="neuron") or "kernel" (the kernel's own S).
    reference_mean: float32 (M,) mean of L over the reference null neurons
      (statistic="standardized"), else None.
    reference_std: float32 (M,) their standard deviation, else None.
  """
  labels: np.ndarray
  scores: np.ndarray
  null_scores: np.ndarray
  p_values: np.ndarray
  q_values: np.ndarray
  null: str
  pooled: bool
  statistic: str = "kernel"
  reference_mean: np.ndarray | None = None
  reference_std: np.ndarray | None = None


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


def _likelihoods(plan, act, ctx):
  """(K, M) the kernel's scores before any prior (L for (soft_)wpmi)."""
  return kernels.map_neuron_chunks(
      lambda x, ids: plan.neuron_scores(x, ids, ctx), act, plan.chunk_size)


_jit_likelihoods = jax.jit(_likelihoods, static_argnums=(0,))


@functools.partial(jax.jit, static_argnums=(0,))
def _scores(plan, act, ctx):
  """(K, M) S and L of the kernel (L before the prior)."""
  ll = _likelihoods(plan, act, ctx)
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


@functools.partial(jax.jit, static_argnums=(1,))
def _ties_in_top(act: jax.Array, top_k: int) -> jax.Array:
  """Whether two equal activations of a neuron reach into its top_k.

  Equal values are adjacent once sorted, so it is enough to compare
  neighbours among each neuron's top_k + 1 values. The optimization
  barrier keeps XLA:CPU's TopK: with the slices below fused into it, it
  becomes a full sort of every neuron's N values (0.71 s instead of
  0.016 s for N = 10,000, K = 512, top_k = 28).
  """
  vals, _ = jax.lax.optimization_barrier(
      jax.lax.top_k(act.T, min(top_k + 1, act.shape[0])))
  return jnp.any(vals[:, 1:] == vals[:, :-1])


@jax.jit
def _random_tie_ranks(act: jax.Array, key: jax.Array) -> jax.Array:
  """(N, K) float32 ranks 0..N-1 of each column, equal values in random order.

  Ranks keep each neuron's order of images where its activations differ;
  top_k of the ranks is the kernel's top_k with ties broken at random,
  independently for each neuron.
  """
  a = act.T  # Sorting along the minor axis is ~2x faster on XLA:CPU.
  order = jnp.lexsort((_random_ranks(key, a.shape), a), axis=1)
  rows = jnp.arange(a.shape[0])[:, None]
  ranks = jnp.zeros(a.shape, jnp.float32).at[rows, order].set(
      jnp.arange(a.shape[1], dtype=jnp.float32)[None, :])
  return ranks.T


@jax.jit
def reference_moments(ref_ll: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(M,) mean and standard deviation over the rows of ref_ll (R, M).

  Two passes (the mean, then the centered squares) in float32: L is a sum
  of top_k logs (about -440 for soft_wpmi's defaults), its spread a few
  units, so a one-pass E[L^2] - E[L]^2 would cancel.
  """
  r = ref_ll.shape[0]
  mean = kernels.column_sums(ref_ll) / r
  var = kernels.column_sums(ref_ll - mean[None], jnp.square) / (r - 1)
  return mean, jnp.sqrt(var)


def standardize(ll: jax.Array, mean: jax.Array, std: jax.Array
                ) -> jax.Array:
  """Z = (L - mean) / std per concept; 0 where std == 0.

  A concept whose reference likelihood does not vary (e.g. a P column
  equal to another, so that Q is the same for every image) gets Z = 0 for
  every neuron, observed and null alike.

  Args:
    ll: (..., M) likelihoods L.
    mean: (M,) reference mean.
    std: (M,) reference standard deviation (>= 0).

  Returns:
    (..., M) float32 Z.
  """
  inv = jnp.where(std > 0, 1.0 / jnp.where(std > 0, std, 1.0), 0.0)
  return (ll - mean) * inv


@jax.jit
def _standardized_best(pool_ll, mean, std):
  """(R,) max over concepts of Z for each pool row."""
  return jnp.max(standardize(pool_ll, mean, std), axis=1)


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
                  reference_size: int | None = None,
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
    labels: optional (K,) int concepts to test; default the argmax of the
      statistic. With null="neuron" and soft_wpmi/wpmi the statistic is Z,
      whose argmax may differ from the run's label (the argmax of S with
      the layer prior); a given label that is not Z's argmax gets a larger
      (conservative, still valid) p-value.
    null: "neuron" (default), "neuron_in_layer" or "layer".
    pool_size: pool null neurons R of the pooled nulls (soft_wpmi, wpmi with
      null="neuron" or "neuron_in_layer"); default
      min(K * B, max(B, DEFAULT_POOL_SIZE)); >= B.
    reference_size: reference null neurons that give Z's mean and standard
      deviation (soft_wpmi, wpmi with null="neuron"); default
      DEFAULT_REFERENCE_SIZE; >= 2.
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
  pooled = null != "layer" and kernel.uses_top_k
  standardized = null == "neuron" and kernel.uses_top_k
  if pooled:
    if pool_size is None:
      pool_size = min(k * num_draws, max(num_draws, DEFAULT_POOL_SIZE))
    pool_size = _check_positive_int(pool_size, "pool_size")
    if pool_size < num_draws:
      raise ValueError(f"pool_size={pool_size} must be >= num_permutations="
                       f"{num_draws}")
  if standardized:
    if reference_size is None:
      reference_size = DEFAULT_REFERENCE_SIZE
    reference_size = _check_positive_int(reference_size, "reference_size")
    if reference_size < 2:
      raise ValueError(f"reference_size={reference_size} must be >= 2")
  if labels is not None:
    labels = np.asarray(labels)
    if (labels.shape != (k,) or not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0 or labels.max() >= m):
      raise ValueError(f"labels must be ({k},) ints in 0..{m - 1}; got shape "
                       f"{labels.shape}, dtype {labels.dtype}")

  root = jax.random.key(seed)
  null_key, draw_key = jax.random.split(root)
  if standardized:
    return _standardized_pvalues(
        plan, kernel_key, act, p, labels, num_draws, pool_size,
        reference_size, hyper.get("top_k", kernel.defaults["top_k"]),
        jax.random.split(jax.random.fold_in(root, 1), 4))

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
  return _finish(act, labels, observed, null_scores, null, pooled)


def _standardized_pvalues(plan, kernel_key, act, p, labels, num_draws,
                          pool_size, reference_size, top_k, keys
                          ) -> LabelPValues:
  """null="neuron" for soft_wpmi/wpmi: Z against the pooled null."""
  n, k = act.shape
  tie_key, ref_key, null_key, draw_key = keys
  # The kernel's top_k puts tied activations (ReLU zeros, often) in image
  # order, which may follow P (an ImageFolder sorts by class); the pool's
  # lists are uniformly random. Where ties reach a neuron's top_k, every
  # column is replaced by its ranks with ties in random order.
  ordered = act
  if bool(_ties_in_top(act, top_k)):
    ordered = _random_tie_ranks(act, tie_key)
  ctx = _context(plan, p, kernel_key)
  ll = _jit_likelihoods(plan, ordered, ctx).block_until_ready()
  del ordered
  ref = _pool_likelihoods(plan, ctx, ref_key, n, reference_size)
  mean, std = reference_moments(ref)
  del ref
  z = standardize(ll, mean, std)
  del ll
  if labels is None:
    labels = jnp.argmax(z, axis=1)
  labels = jnp.asarray(labels, jnp.int32)
  observed = jnp.take_along_axis(z, labels[:, None], axis=1)[:, 0]
  observed.block_until_ready()
  del z
  pool_ll = _pool_likelihoods(plan, ctx, null_key, n, pool_size)
  del ctx
  # Z's mean and std are the same for every neuron, so one max per pool
  # row serves every neuron that draws it.
  pool_best = _standardized_best(pool_ll, mean, std)
  del pool_ll
  draws = _pool_draws(draw_key, k, num_draws, pool_size)
  null_scores = pool_best[draws]
  return _finish(act, labels, observed, null_scores, "neuron", True,
                 statistic="standardized", reference_mean=np.asarray(mean),
                 reference_std=np.asarray(std))


def _finish(act, labels, observed, null_scores, null, pooled, **extra
            ) -> LabelPValues:
  """p-values (constant neurons get 1), q-values, the result."""
  num_draws = null_scores.shape[1]
  null_scores = np.asarray(null_scores)
  observed = np.asarray(observed)
  exceed = np.sum(null_scores >= observed[:, None], axis=1)
  p_values = (1.0 + exceed) / (1.0 + num_draws)
  p_values[np.asarray(_constant_columns(act))] = 1.0
  return LabelPValues(labels=np.asarray(labels), scores=observed,
                      null_scores=null_scores, p_values=p_values,
                      q_values=bh_qvalues(p_values), null=null,
                      pooled=pooled, **extra)


def _null_chunk(num_concepts: int) -> int:
  """Neurons per chunk of the pooled null: 1 MiB of (chunk, M) float32.

  The chunk's c rows stay in cache while its B pool rows stream past.
  """
  return max(1, 2**20 // (4 * num_concepts))
