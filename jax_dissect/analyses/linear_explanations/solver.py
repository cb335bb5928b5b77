"""Linear explanations: each neuron as a short weighted sum of concepts.

Linear Explanations (Oikarinen & Weng, ICML 2024) explain neuron k by a sparse
linear model act_k ~ C[:, S] @ w + bias over concept presences C = sigmoid(a *
(P + b)) (jax_dissect.analyses.scoring.simulation.concept_presence). Here the
search runs for a whole layer at once, chunked over neurons:

1. Split and standardize. The probe images are split by
   scoring.split_indices(N, "half", seed) into a fit half F and a held-out
   half H. Activations (N, K) and presences (N, M) are standardized per
   column with the mean and standard deviation of F (a column constant on F
   keeps its offset and gets scale 1).
2. Rank (`elastic_net`). An elastic net of each neuron on the concepts,
   on F:  min_w 1/(2|F|) ||y - Z w||^2 + lam (alpha |w|_1 +
   (1 - alpha)/2 ||w||^2), solved by FISTA (accelerated proximal gradient:
   an optax.sgd step of size 1/Lip, then soft-thresholding) for `en_steps`
   steps over a screen of `screen` concepts per neuron (on their Gram
   matrix, one neuron of the chunk at a time so that it stays in cache; the
   correlations of the whole chunk are one matrix product). The first
   screen is the neuron's concepts of largest |correlation|, solved from
   w = 0. A concept can matter only jointly with others: for
   y = z1 - 0.65 z2 with presences z1, z2 correlated 0.65, z2 hardly
   correlates with y, misses that screen, and the net fits it with a
   dozen substitutes. So the net is solved once more (_SCREEN_REFITS),
   warm-started, on a new screen: the concepts with non-zero weight, then
   those whose gradient of the full objective violates the optimality
   (KKT) conditions most; z2 has the largest such gradient. (No refit when
   screen = M: the first solve is then the full net.)
   The full gradient at the final solution is taken over all M concepts
   (the fitted values from the screened columns, then one matrix product
   for the chunk). Each neuron's candidates are its concepts with non-zero
   weight, by |w|, then the others by |gradient| (how much the full net
   wants them in). Only the first width * max_length are kept.
3. Greedy forward selection (`greedy_search`), vmapped over neurons and
   candidates. A neuron starts with no concepts and held-out correlation 0.
   Each step scores every candidate not chosen yet by how much it reduces
   the fit-half least-squares residual given the chosen ones (from the
   candidates' Gram matrix, re-scored every step, so that a concept useless
   alone can join once the concept it complements is in) and tries the
   `width` best; for each, a linear model on (chosen + candidate)
   standardized presences is fitted on F by optax Adam (`adam_steps`=100
   steps, learning rate 0.3, from w = 0 and bias = 0) on the mean squared
   error, and scored by the Pearson correlation of its prediction with the
   activation on H. gain = correlation - the current correlation. The best
   candidate is added if its gain >= `tolerance`. A neuron stops at
   `max_length` concepts or when the best gain < tolerance.

The Adam fits run on sufficient statistics (each neuron's Gram matrix of
its R ranked candidates on F and on H, computed once per chunk: every model
the search fits uses only candidates), which gives the same loss and
gradients as the per-image form at O(L^2) cost per Adam step.

Output weights are on the raw presence scale: the prediction is
C[:, S] @ weights + bias (the neuron's standardized activation), so
`LinearExplanations.explanations()` goes straight into
scoring.simulation_scores, whose held-out correlation equals `correlation`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_dissect.analyses.scoring import simulation as scoring

DEFAULTS = {
    "width": 10,
    "max_length": 10,
    "tolerance": 0.02,
    "lam": 0.05,
    "alpha": 0.99,
    "en_steps": 200,
    "screen": 200,
    "adam_steps": 100,
    "learning_rate": 0.3,
}
# Neurons per chunk (both stages).
DEFAULT_CHUNK = 256
# Concepts per block when building the standardized presences.
_CONCEPT_BLOCK = 2048
# A presence column whose standard deviation on the fit half is below this
# (saturated: a, b do not suit the CLIP model's P) is treated as constant.
MIN_PRESENCE_SD = 1e-5
# Neurons per vmapped screened solve on an accelerator (gathers
# solve_batch x screen x |F| presences at once).
_ACCELERATOR_SOLVE_BATCH = 64
# Power-iteration steps for the Lipschitz constant of the elastic net.
_POWER_STEPS = 30
# Screened elastic-net solves after the first (each on a screen rebuilt
# from the last solution's support and its KKT violations); none when the
# screen holds every concept.
_SCREEN_REFITS = 1


@dataclasses.dataclass(frozen=True)
class LinearExplanations:
  """Each neuron's linear explanation.

  Attributes:
    concepts: int32 (K, L) concept indices in the order chosen; -1 pads.
    weights: float32 (K, L) weights on the raw presence C (0 in pads).
    bias: float32 (K,) bias; C[:, S] @ w + bias predicts the neuron's
      activation standardized with the fit half's statistics.
    correlation: float32 (K,) held-out Pearson correlation of the
      prediction (NaN for a neuron constant on either half; 0 when no
      concept was kept).
    lengths: int32 (K,) number of concepts of each explanation.
    fit: int64 (N - H,) fit-half image indices.
    heldout: int64 (H,) held-out image indices.
  """
  concepts: np.ndarray
  weights: np.ndarray
  bias: np.ndarray
  correlation: np.ndarray
  lengths: np.ndarray
  fit: np.ndarray
  heldout: np.ndarray

  def explanations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concepts, weights, bias) as scoring.simulation_scores takes them."""
    return self.concepts, self.weights, self.bias


@dataclasses.dataclass(frozen=True)
class Design:
  """Standardized presences of the fit and held-out halves.

  Attributes:
    fit_t: float32 (M, |F|) standardized presence, concept-major.
    held_t: float32 (M, H) the held-out half, with the fit half's statistics.
    mean: float32 (M,) presence mean on the fit half.
    scale: float32 (M,) presence standard deviation on F (1 if 0).
    fit: int64 (|F|,) image indices; heldout: int64 (H,).
  """
  fit_t: jax.Array
  held_t: jax.Array
  mean: np.ndarray
  scale: np.ndarray
  fit: np.ndarray
  heldout: np.ndarray


def check_options(**options: Any) -> dict[str, Any]:
  """DEFAULTS updated with `options`, each checked (one-line ValueError)."""
  unknown = sorted(set(options) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"unknown option(s) {unknown}; allowed: "
                     f"{', '.join(DEFAULTS)}")
  out = {**DEFAULTS, **options}
  for name in ("width", "max_length", "en_steps", "screen", "adam_steps"):
    v = out[name]
    if (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or
        v < (0 if name == "en_steps" else 1)):
      raise ValueError(f"{name}={v!r} must be an int >= "
                       f"{0 if name == 'en_steps' else 1}")
    out[name] = int(v)
  for name, low, high in (("tolerance", 0.0, math.inf),
                          ("lam", 0.0, math.inf), ("alpha", 0.0, 1.0),
                          ("learning_rate", 0.0, math.inf)):
    v = out[name]
    ok = (isinstance(v, (int, float, np.floating)) and
          not isinstance(v, bool) and math.isfinite(v) and low <= v <= high)
    if not ok or (name == "learning_rate" and v == 0):
      raise ValueError(f"{name}={v!r} must be a finite number in "
                       f"[{low}, {high}]" +
                       (" and > 0" if name == "learning_rate" else ""))
    out[name] = float(v)
  return out


# ----------------------------------------------------------------------------
# Standardization.
# ----------------------------------------------------------------------------


def _column_stats(x: np.ndarray, min_sd: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean, standard deviation (1 where <= min_sd) and constant columns."""
  mean = x.mean(0, dtype=np.float64)
  sd = x.std(0, dtype=np.float64)
  constant = sd <= min_sd
  return (mean.astype(np.float32),
          np.where(constant, 1.0, sd).astype(np.float32), constant)


@jax.jit
def _block_presence(p: jax.Array, a: jax.Array, b: jax.Array):
  """Presence sigmoid(a (P + b)) of a block of concepts."""
  return jax.nn.sigmoid(a * (p + b))


def prepare(concept_activations: Any, *, a: float, b: float, seed: int,
            num_images: int) -> Design:
  """Standardized presences of both halves (built in concept blocks).

  Args:
    concept_activations: (N, M) P (numpy or memory-mapped: read in blocks).
    a: presence slope.
    b: presence offset.
    seed: seed of the split.
    num_images: N (checked against P).

  Returns:
    A Design.
  """
  n, m = concept_activations.shape
  if n != num_images:
    raise ValueError(f"concept_activations has {n} images; activations "
                     f"have {num_images}")
  fit, heldout = scoring.split_indices(n, "half", seed)
  fit_t = np.empty((m, len(fit)), np.float32)
  held_t = np.empty((m, len(heldout)), np.float32)
  mean = np.empty((m,), np.float32)
  scale = np.empty((m,), np.float32)
  for lo in range(0, m, _CONCEPT_BLOCK):
    hi = min(m, lo + _CONCEPT_BLOCK)
    block = np.asarray(concept_activations[:, lo:hi], np.float32)
    c = np.asarray(_block_presence(block, jnp.float32(a), jnp.float32(b)))
    mu, sd, constant = _column_stats(c[fit], MIN_PRESENCE_SD)
    mean[lo:hi], scale[lo:hi] = mu, sd
    keep = np.float32(1.0) - constant.astype(np.float32)  # Zero constants.
    fit_t[lo:hi] = ((c[fit] - mu) / sd * keep).T
    held_t[lo:hi] = ((c[heldout] - mu) / sd * keep).T
  fit_j = jnp.asarray(fit_t)
  del fit_t
  held_j = jnp.asarray(held_t)
  del held_t
  return Design(fit_t=fit_j, held_t=held_j, mean=mean, scale=scale,
                fit=fit, heldout=heldout)


def standardize_activations(activations: np.ndarray, fit: np.ndarray,
                            heldout: np.ndarray
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Fit and held-out activations standardized with the fit half's stats.

  Returns:
    (y_fit (|F|, K), y_held (H, K), constant (K,) bool: the neuron is
    constant on the fit or the held-out half).
  """
  act = np.asarray(activations, np.float32)
  af, ah = act[fit], act[heldout]
  mu, sd, _ = _column_stats(af)
  constant = (af.max(0) == af.min(0)) | (ah.max(0) == ah.min(0))
  return (af - mu) / sd, (ah - mu) / sd, constant


# ----------------------------------------------------------------------------
# Elastic net ranking.
# ----------------------------------------------------------------------------


def _power_lipschitz(gram: jax.Array) -> jax.Array:
  """Largest eigenvalue (x 1.05) of a (J, J) Gram matrix."""
  v = jnp.ones(gram.shape[:1], jnp.float32)

  def body(_, v):
    w = jnp.matmul(gram, v)
    return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

  v = jax.lax.fori_loop(0, _POWER_STEPS, body, v)
  return 1.05 * jnp.linalg.norm(jnp.matmul(gram, v))


def _fista(gram: jax.Array, cross: jax.Array, lam: jax.Array,
           alpha: jax.Array, steps: int, w0: jax.Array | None = None
           ) -> jax.Array:
  """FISTA on one neuron's screened net: gram (J, J), cross (J,) -> w (J,).

  Minimizes w' gram w / 2 - cross' w + lam (alpha |w|_1 + (1 - alpha)/2
  ||w||^2) from w0 (default 0): an optax.sgd step of size 1/Lip, then
  soft-thresholding.
  """
  hi = jax.lax.Precision.HIGHEST
  ridge = lam * (1.0 - alpha)
  lip = _power_lipschitz(gram) + ridge
  threshold = lam * alpha / lip
  opt = optax.sgd(1.0 / lip)

  def grad(w):
    return jnp.matmul(gram, w, precision=hi) - cross + ridge * w

  def body(_, carry):
    w, z, t, state = carry
    updates, state = opt.update(grad(z), state)
    step = optax.apply_updates(z, updates)
    w_new = jnp.sign(step) * jnp.maximum(jnp.abs(step) - threshold, 0.0)
    t_new = (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)) / 2.0
    z = w_new + ((t - 1.0) / t_new) * (w_new - w)
    return w_new, z, t_new, state

  if w0 is None:
    w0 = jnp.zeros_like(cross)
  return jax.lax.fori_loop(
      0, steps, body, (w0, w0, jnp.float32(1.0), opt.init(w0)))[0]


@functools.partial(jax.jit, static_argnames=("steps", "screen",
                                             "num_ranked", "solve_batch"))
def elastic_net(fit_t: jax.Array, y_fit: jax.Array, lam: jax.Array,
                alpha: jax.Array, *, steps: int, screen: int,
                num_ranked: int, solve_batch: int | None = None
                ) -> tuple[jax.Array, jax.Array]:
  """Elastic-net weights of a chunk of neurons and their candidate ranking.

  Each neuron's net is solved on its `screen` concepts of largest
  |correlation| (FISTA on their Gram matrix), then (screen < M) again on
  the support of that solution and the concepts whose full gradient
  violates the KKT conditions most; the gradient of the full objective at
  the last solution is computed for all M concepts, and concepts outside
  the solution's support are ranked by its magnitude (the KKT violation:
  how much the objective wants them in). Each neuron's Gram, FISTA and
  fitted values run one neuron at a time (lax.map), so its J x J Gram
  stays in cache on a CPU, or `solve_batch` neurons at a time (vmapped;
  solve_batch_size()).

  Args:
    fit_t: (M, |F|) standardized presence of the fit half.
    y_fit: (|F|, c) standardized activations of c neurons.
    lam: penalty strength.
    alpha: L1 share of the penalty.
    steps: FISTA steps.
    screen: concepts per neuron in the net (J, <= M).
    num_ranked: candidates kept per neuron (R, <= M).
    solve_batch: neurons per screened solve (None: one at a time).

  Returns:
    (weights (M, c), zero outside the screened concepts; ranked (c, R)
    int32 concept indices: non-zero weights by |weight|, then the rest by
    |gradient|).
  """
  m, n = fit_t.shape
  c = y_fit.shape[1]
  hi = jax.lax.Precision.HIGHEST
  corr = jnp.matmul(fit_t, y_fit, precision=hi) / n  # (M, c)
  _, idx = jax.lax.top_k(jnp.abs(corr).T, screen)  # (c, J)
  ridge = lam * (1.0 - alpha)

  def solve_one(args):  # One neuron: its Gram stays in cache for FISTA.
    idx_k, cross_k, w0_k = args
    x = fit_t[idx_k]  # (J, n)
    gram = jnp.matmul(x, x.T, precision=hi) / n
    w = _fista(gram, cross_k, lam, alpha, steps, w0_k)
    # The fitted values: the weights are zero outside the screen.
    return w, jnp.matmul(w, x, precision=hi)

  weights = jnp.zeros((c, m), jnp.float32)
  full_grad = -corr.T  # The net's gradient at weights = 0.
  rounds = 1 + (_SCREEN_REFITS if screen < m else 0)
  for r in range(rounds):
    if r:
      # The next screen: the concepts with non-zero weight, then those
      # whose gradient violates the optimality (KKT) conditions most. A
      # concept that matters only jointly (a suppressor: y = z1 - z2 with
      # z1, z2 correlated has ~0 correlation with z2) is missed by the
      # first, correlation-based screen but has the largest gradient.
      score = jnp.where(weights != 0, 1e30 + jnp.abs(weights),
                        jnp.abs(full_grad + ridge * weights))
      _, idx = jax.lax.top_k(score, screen)
    cross = jnp.take_along_axis(corr.T, idx, axis=1)  # (c, J)
    w0 = jnp.take_along_axis(weights, idx, axis=1)  # Warm start.
    w_s, fitted = jax.lax.map(solve_one, (idx, cross, w0),
                              batch_size=solve_batch)  # (c, J), (c, |F|)
    weights = jnp.zeros((c, m), jnp.float32).at[
        jnp.arange(c)[:, None], idx].set(w_s)  # (c, M)
    full_grad = (jnp.matmul(fit_t, fitted.T, precision=hi) / n - corr).T
  nonzero = weights != 0
  k_nz = jnp.where(nonzero, jnp.abs(weights), -1.0)
  k_z = jnp.where(nonzero, -1.0, jnp.abs(full_grad + ridge * weights))
  _, first = jax.lax.top_k(k_nz, num_ranked)
  _, rest = jax.lax.top_k(k_z, num_ranked)
  count = jnp.minimum(jnp.sum(nonzero, axis=1), num_ranked)[:, None]
  pos = jnp.arange(num_ranked)[None, :]
  ranked = jnp.where(pos < count, first, jnp.take_along_axis(
      rest, jnp.maximum(pos - count, 0), axis=1))
  return weights.T, ranked.astype(jnp.int32)


# ----------------------------------------------------------------------------
# Greedy forward selection.
# ----------------------------------------------------------------------------


def _moments(x: jax.Array, y: jax.Array):
  """Gram, cross-moment and means of rows x (d, n) with y (n,)."""
  n = x.shape[1]
  hi = jax.lax.Precision.HIGHEST
  return (jnp.matmul(x, x.T, precision=hi) / n,
          jnp.matmul(x, y, precision=hi) / n, jnp.mean(x, 1), jnp.mean(y),
          jnp.mean(y * y))


def _fit_adam(gram, cross, means, ybar, steps, learning_rate):
  """Adam on the mean squared error of (w, bias), from sufficient stats.

  gram (..., d, d), cross (..., d), means (..., d); masked columns are
  zero rows/columns and stay at w = 0.
  """
  def loss(params):
    w, b = params
    quad = jnp.einsum("...i,...ij,...j->...", w, gram, w)
    return jnp.sum(quad + 2.0 * b * jnp.sum(w * means, -1) + b * b -
                   2.0 * jnp.sum(w * cross, -1) - 2.0 * b * ybar)

  opt = optax.adam(learning_rate)
  params = (jnp.zeros(cross.shape, jnp.float32),
            jnp.zeros(cross.shape[:-1], jnp.float32))

  def body(_, carry):
    params, state = carry
    updates, state = opt.update(jax.grad(loss)(params), state)
    return optax.apply_updates(params, updates), state

  params, _ = jax.lax.fori_loop(0, steps, body, (params, opt.init(params)))
  return params


def _heldout_corr(w, gram, cross, means, ybar, yy):
  """Pearson correlation of x @ w (+ any bias) with y on H, from moments."""
  cov = jnp.sum(w * (cross - means * ybar[..., None]), -1)
  var_p = (jnp.einsum("...i,...ij,...j->...", w, gram, w) -
           jnp.sum(w * means, -1) ** 2)
  var_y = yy - ybar ** 2
  r = cov / jnp.sqrt(jnp.maximum(var_p, 1e-30) * var_y)
  return jnp.where(var_p > 1e-12, jnp.clip(r, -1.0, 1.0), 0.0)


def _candidate_moments(x_t: jax.Array, y: jax.Array, ranked: jax.Array):
  """_moments of each neuron's ranked candidates, one neuron at a time.

  Args:
    x_t: (M, n) standardized presence of one half.
    y: (n, c) standardized activations of c neurons.
    ranked: (c, R) int32 candidate concepts.

  Returns:
    (gram (c, R, R), cross (c, R), means (c, R), ybar (c,), yy (c,)).
  """
  def one(args):
    ranked_k, y_k = args
    return _moments(x_t[ranked_k], y_k)

  return jax.lax.map(one, (ranked, y.T))


def _fit_gains(stats, sel, length):
  """Fit-half gain of adding each candidate to the chosen ones, (R,).

  The reduction of the least-squares residual variance on F when candidate
  j joins the chosen concepts S (all centered): r_j^2 / d_j with
  r_j = cov(x_j, y | S) = c_j - G_jS G_SS^-1 c_S and d_j = var(x_j | S) =
  G_jj - G_jS G_SS^-1 G_Sj (G, c the centered Gram and cross-moments).
  A candidate (almost) in the span of S gets 0; chosen ones -inf.
  """
  g, c, m, yb, _ = stats
  g = g - m[:, None] * m[None, :]
  c = c - m * yb
  max_length = sel.shape[0]
  mask = (jnp.arange(max_length) < length).astype(jnp.float32)
  hi = jax.lax.Precision.HIGHEST
  g_sr = g[sel] * mask[:, None]  # (L, R)
  # Unused slots: identity rows/columns, so the solve ignores them.
  g_ss = (g_sr[:, sel] * mask[None, :] + jnp.diag(1.0 - mask))
  a = jnp.linalg.solve(g_ss, g_sr)  # (L, R)
  beta = jnp.linalg.solve(g_ss, c[sel] * mask)  # (L,)
  r = c - jnp.matmul(beta, g_sr, precision=hi)
  d = jnp.diagonal(g) - jnp.sum(g_sr * a, axis=0)
  ok = d > 1e-6 * jnp.maximum(jnp.diagonal(g), 1e-30)
  gains = jnp.where(ok, r * r / jnp.where(ok, d, 1.0), 0.0)
  chosen = jnp.zeros(g.shape[0], bool).at[sel].max(mask > 0)
  return jnp.where(chosen, -jnp.inf, gains)


def _greedy_step(state, fit_stats, held_stats, *, width, tolerance,
                 adam_steps, learning_rate):
  """One step of the greedy search for one neuron (vmapped over neurons).

  The chosen concepts and the window are positions in the neuron's ranked
  candidates; fit_stats and held_stats are their _candidate_moments.
  """
  sel, length, done, corr, weights, bias = state
  max_length = sel.shape[0]
  # The window: the candidates that most reduce the fit-half residual
  # given the chosen ones (re-scored every step: a concept useless alone
  # can be what the chosen ones lack, e.g. y = z1 - z2 with z1, z2
  # correlated).
  fit_gain = _fit_gains(fit_stats, sel, length)
  _, window = jax.lax.top_k(fit_gain, width)
  valid = (fit_gain[window] > -jnp.inf) & ~done & (length < max_length)
  cols = jnp.concatenate([sel, window])  # (L + width,)

  def pick(stats):
    g, c, m, yb, yy = stats
    return g[cols[:, None], cols[None, :]], c[cols], m[cols], yb, yy

  gf, cf, mf, ybf, _ = pick(fit_stats)
  gh, ch, mh, ybh, yyh = pick(held_stats)
  # Model j: the chosen slots 0..L-1 (masked by length) and candidate j.
  idx = jnp.concatenate([
      jnp.broadcast_to(jnp.arange(max_length), (width, max_length)),
      (max_length + jnp.arange(width))[:, None]], axis=1)  # (width, L + 1)
  mask = jnp.concatenate([jnp.arange(max_length) < length,
                          jnp.ones((1,), bool)]).astype(jnp.float32)
  outer = mask[:, None] * mask[None, :]

  def sub(g, c, m):
    return (g[idx[:, :, None], idx[:, None, :]] * outer, c[idx] * mask,
            m[idx] * mask)

  gfj, cfj, mfj = sub(gf, cf, mf)
  w, b = _fit_adam(gfj, cfj, mfj, ybf, adam_steps, learning_rate)
  ghj, chj, mhj = sub(gh, ch, mh)
  r = _heldout_corr(w, ghj, chj, mhj, ybh, yyh)  # (width,)
  gains = jnp.where(valid, r - corr, -jnp.inf)
  best = jnp.argmax(gains)
  add = gains[best] >= tolerance
  w_best = w[best]
  new_weights = w_best[:max_length].at[length].set(w_best[max_length],
                                                   mode="drop")
  return (jnp.where(add, sel.at[length].set(window[best], mode="drop"), sel),
          length + add.astype(jnp.int32), done | ~add,
          jnp.where(add, r[best], corr),
          jnp.where(add, new_weights, weights),
          jnp.where(add, b[best], bias))


@functools.partial(jax.jit, static_argnames=(
    "width", "max_length", "adam_steps"))
def greedy_search(ranked: jax.Array, y_fit: jax.Array, y_held: jax.Array,
                  fit_t: jax.Array, held_t: jax.Array, tolerance: jax.Array,
                  learning_rate: jax.Array, *, width: int, max_length: int,
                  adam_steps: int):
  """Greedy forward selection for a chunk of c neurons.

  The moments of each neuron's R candidates on both halves are computed
  once (every model the search fits uses only candidates), then the steps
  run on them.

  Args:
    ranked: (c, R) int32 candidate concepts, best first.
    y_fit: (|F|, c) and y_held (H, c): standardized activations.
    fit_t: (M, |F|) and held_t (M, H): standardized presences.
    tolerance: smallest gain that adds a concept.
    learning_rate: Adam's learning rate.
    width: candidates tried per step.
    max_length: most concepts per neuron.
    adam_steps: Adam steps per fit.

  Returns:
    (concepts (c, L) int32 with -1 pads, weights (c, L) and bias (c,) on
    standardized presences, correlation (c,), lengths (c,)).
  """
  c = ranked.shape[0]
  fit_stats = _candidate_moments(fit_t, y_fit, ranked)
  held_stats = _candidate_moments(held_t, y_held, ranked)
  step = functools.partial(
      _greedy_step, width=width, tolerance=tolerance, adam_steps=adam_steps,
      learning_rate=learning_rate)
  step = jax.vmap(step)
  state = (jnp.zeros((c, max_length), jnp.int32),
           jnp.zeros((c,), jnp.int32),
           jnp.zeros((c,), bool), jnp.zeros((c,), jnp.float32),
           jnp.zeros((c, max_length), jnp.float32),
           jnp.zeros((c,), jnp.float32))

  def body(_, state):
    return step(state, fit_stats, held_stats)

  sel, length, _, corr, weights, bias = jax.lax.fori_loop(
      0, max_length, body, state)
  used = jnp.arange(max_length)[None, :] < length[:, None]
  concepts = jnp.take_along_axis(ranked, sel, axis=1)
  return (jnp.where(used, concepts, -1), jnp.where(used, weights, 0.0), bias,
          corr, length)


# ----------------------------------------------------------------------------
# The whole search.
# ----------------------------------------------------------------------------


def solve_batch_size(x: jax.Array, chunk: int) -> int | None:
  """Neurons per screened solve on x's device: one on a CPU (cache), else
  up to _ACCELERATOR_SOLVE_BATCH at once (a sequential FISTA loop per
  neuron would leave an accelerator idle)."""
  if all(d.platform == "cpu" for d in x.devices()):
    return None
  return min(chunk, _ACCELERATOR_SOLVE_BATCH)


def explain_chunk(design: Design, y_fit: np.ndarray, y_held: np.ndarray,
                  options: dict[str, Any]):
  """Elastic net + greedy search of one chunk of neurons (see module doc).

  Args:
    design: the standardized presences.
    y_fit: (|F|, c) standardized fit-half activations.
    y_held: (H, c) standardized held-out activations.
    options: checked options (check_options).

  Returns:
    numpy (concepts (c, L), weights (c, L) and bias (c,) on standardized
    presences, correlation (c,), lengths (c,)).
  """
  num_ranked = min(design.fit_t.shape[0],
                   options["width"] * options["max_length"])
  yf = jnp.asarray(y_fit)
  _, ranked = elastic_net(
      design.fit_t, yf, jnp.float32(options["lam"]),
      jnp.float32(options["alpha"]), steps=options["en_steps"],
      screen=min(design.fit_t.shape[0], options["screen"]),
      num_ranked=num_ranked,
      solve_batch=solve_batch_size(design.fit_t, yf.shape[1]))
  out = greedy_search(
      ranked, yf, jnp.asarray(y_held), design.fit_t, design.held_t,
      jnp.float32(options["tolerance"]),
      jnp.float32(options["learning_rate"]),
      width=min(options["width"], num_ranked),
      max_length=options["max_length"], adam_steps=options["adam_steps"])
  return tuple(np.asarray(x) for x in out)


def linear_explanations(activations: Any, concept_activations: Any, *,
                        a: float = scoring.DEFAULT_PRESENCE_A,
                        b: float = scoring.DEFAULT_PRESENCE_B, seed: int = 0,
                        chunk_size: int = DEFAULT_CHUNK,
                        **options: Any) -> LinearExplanations:
  """Linear explanations of all K neurons of a layer (see module doc).

  Args:
    activations: (N, K) activations.
    concept_activations: (N, M) P, CLIP image/concept cosine similarities
      (numpy or memory-mapped: read in blocks of concepts).
    a: presence slope (C = sigmoid(a (P + b))).
    b: presence offset.
    seed: seed of the fit/held-out split (scoring.split_indices "half").
    chunk_size: neurons per chunk: memory O(M * chunk) for the elastic net.
    **options: width, max_length, tolerance, lam, alpha, en_steps, screen,
      adam_steps, learning_rate (DEFAULTS).

  Returns:
    LinearExplanations (weights on the raw presence scale).
  """
  opts = check_options(**options)
  scoring._check_presence_params(a, b)  # pylint: disable=protected-access
  if (not isinstance(chunk_size, (int, np.integer)) or
      isinstance(chunk_size, bool) or chunk_size < 1):
    raise ValueError(f"chunk_size={chunk_size!r} must be an int >= 1")
  if (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
    raise ValueError(f"seed={seed!r} must be an int")
  act = np.asarray(scoring._as_matrix(  # pylint: disable=protected-access
      activations, "activations", "N images, K neurons"))
  p_shape = np.shape(concept_activations)
  if len(p_shape) != 2 or 0 in p_shape:
    raise ValueError("concept_activations must be a non-empty 2-D array "
                     f"(N images, M concepts); got shape {p_shape}")
  if p_shape[0] != act.shape[0]:
    raise ValueError(f"activations have {act.shape[0]} images but "
                     f"concept_activations has {p_shape[0]}")
  design = prepare(concept_activations, a=a, b=b, seed=int(seed),
                   num_images=act.shape[0])
  if not np.all(np.isfinite(design.mean)):
    raise ValueError("concept_activations contains NaN or inf values; all "
                     "values must be finite")
  y_fit, y_held, constant = standardize_activations(act, design.fit,
                                                    design.heldout)
  k = act.shape[1]
  parts = []
  for lo in range(0, k, chunk_size):
    hi = min(k, lo + chunk_size)
    yf, yh = y_fit[:, lo:hi], y_held[:, lo:hi]
    if hi - lo < chunk_size and lo > 0:  # Pad: one compiled shape.
      pad = ((0, 0), (0, chunk_size - (hi - lo)))
      yf, yh = np.pad(yf, pad), np.pad(yh, pad)
    parts.append([x[:hi - lo] for x in explain_chunk(design, yf, yh, opts)])
  concepts, w_std, bias_std, corr, lengths = (
      np.concatenate(xs) for xs in zip(*parts))
  # Raw presence scale: z = (C - mean) / scale.
  safe = np.maximum(concepts, 0)
  weights = np.where(concepts >= 0, w_std / design.scale[safe], 0.0)
  bias = bias_std - np.sum(weights * design.mean[safe], axis=1)
  corr = np.where(constant, np.nan, corr)
  return LinearExplanations(
      concepts=concepts.astype(np.int32), weights=weights.astype(np.float32),
      bias=bias.astype(np.float32), correlation=corr.astype(np.float32),
      lengths=lengths.astype(np.int32), fit=design.fit,
      heldout=design.heldout)
