"""How good is each explanation: simulation scores on held-out images.

Array-level functions (numpy or jax in, numpy out) over all K neurons of a
layer at once, jitted and chunked over neurons: memory O(H*(M + chunk*L))
for H held-out images and explanations of at most L concepts.

Concept presence
  C = sigmoid(a * (P + b)), (N, M): how present concept m is in image i,
  from the backbone's cosine similarity P. a and b depend on the backbone
  (its range of cosine similarities): a backbone with documented values
  (DOCUMENTED_PRESENCE: a=58, b=-0.25, the values Linear Explanations
  (Oikarinen & Weng, ICML 2024) used for its CLIP, which scoring applied to
  the default CLIP before) gets those; any other gets a, b fitted to its
  own P (`fit_presence_from_p`: no labels, each image's top concepts by P
  as the present ones); `presence_params_for` picks, and describe_neurons
  writes the values it picked into the run (config.json
  "concept_presence"), which `run_presence_params` reads back.
  `fit_presence_params` fits a, b to real presence labels.

Simulation scores (`simulation_scores`)
  An explanation predicts a neuron's activation on held-out images: C[:, m]
  for a one-concept label, C[:, S] @ w + bias for a weighted list of
  concepts. On the held-out images (`split_indices`), per neuron:
  - correlation: Pearson correlation of activation and prediction;
  - spearman: Pearson correlation of their ranks (ties get average ranks);
  - auprc: average precision (area under the precision-recall curve, the
    step-wise estimator, no interpolation) of the prediction as a score for
    the positives, the neuron's top `top_fraction` (5%) held-out images by
    activation: n_pos = max(1, floor(H * top_fraction)) images, ties at the
    cut-off broken by held-out order (lower index first); tied predictions
    form one threshold.
  A neuron whose held-out activations are all equal (max == min) gets NaN for
  all three; a prediction whose held-out values are all equal gets NaN
  correlation and spearman (undefined), and auprc = n_pos / H (one
  threshold, the base rate).

Label p-values: see jax_dissect.analyses.scoring.significance (re-exported here).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_dissect import similarity
from jax_dissect.analyses.scoring import significance
from jax_dissect.clip import loading as clip_loading

# Linear Explanations' presence parameters for its CLIP model.
DEFAULT_PRESENCE_A = 58.0
DEFAULT_PRESENCE_B = -0.25
# Documented presence parameters by backbone (describe_neurons' clip_model
# name): the default CLIP keeps the values scoring always used for it.
DOCUMENTED_PRESENCE = {
    clip_loading.DEFAULT_MODEL: (DEFAULT_PRESENCE_A, DEFAULT_PRESENCE_B),
}
# The fit from a backbone's own P: each image's top PRESENCE_TOP_FRACTION of
# the concepts by P count as present, on at most PRESENCE_FIT_IMAGES images
# (a seeded sample).
PRESENCE_TOP_FRACTION = 0.01
PRESENCE_FIT_IMAGES = 2048
# Label smoothing of the fit when P separates the pseudo-labels.
PRESENCE_SMOOTHING = 0.01
# Fewest held-out images a split may leave.
MIN_HELDOUT = 10
# Neurons per chunk of the simulation scores.
_SIM_CHUNK = 128


# ----------------------------------------------------------------------------
# Concept presence.
# ----------------------------------------------------------------------------


def _check_presence_params(a: float, b: float) -> None:
  if not (isinstance(a, (int, float, np.floating)) and math.isfinite(a)
          and a > 0):
    raise ValueError(f"presence slope a={a!r} must be a finite number > 0")
  if not (isinstance(b, (int, float, np.floating)) and math.isfinite(b)):
    raise ValueError(f"presence offset b={b!r} must be a finite number")


@jax.jit
def _presence(p: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
  return jax.nn.sigmoid(a * (p + b))


def concept_presence(concept_activations: Any, a: float = DEFAULT_PRESENCE_A,
                     b: float = DEFAULT_PRESENCE_B) -> np.ndarray:
  """Concept presence C = sigmoid(a * (P + b)).

  a and b depend on the CLIP model that made P: the defaults are Linear
  Explanations' values for its CLIP; `fit_presence_params` fits them.

  Args:
    concept_activations: (N, M) P, CLIP cosine similarity image/concept.
    a: slope (> 0).
    b: offset added to P.

  Returns:
    (N, M) float32 numpy array in [0, 1].
  """
  _check_presence_params(a, b)
  p = _as_matrix(concept_activations, "concept_activations",
                 "N images, M concepts")
  return np.asarray(_presence(p, jnp.float32(a), jnp.float32(b)))


def _as_matrix(x: Any, name: str, dims: str) -> jax.Array:
  """A finite, non-empty float32 2-D jax array, or a one-line ValueError."""
  try:
    x = jnp.asarray(x, jnp.float32)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be a numeric 2-D array ({dims})") from e
  if x.ndim != 2 or 0 in x.shape:
    raise ValueError(f"{name} must be a non-empty 2-D array ({dims}); got "
                     f"shape {tuple(x.shape)}")
  if not bool(jnp.all(jnp.isfinite(x))):
    raise ValueError(f"{name} contains NaN or inf values; all values must "
                     "be finite")
  return x


@jax.jit
def _logistic_moments(p: jax.Array, y: jax.Array, w: jax.Array,
                      c: jax.Array) -> jax.Array:
  """Log-likelihood, gradient and Hessian sums of y ~ sigmoid(w p + c)."""
  z = w * p + c
  s = jax.nn.sigmoid(z)
  r = s - y
  v = s * (1.0 - s)
  loglik = jnp.sum(y * jax.nn.log_sigmoid(z) +
                   (1.0 - y) * jax.nn.log_sigmoid(-z))
  return jnp.stack([loglik, jnp.sum(r * p), jnp.sum(r), jnp.sum(v * p * p),
                    jnp.sum(v * p), jnp.sum(v)])


@jax.jit
def _class_ranges(p: jax.Array, y: jax.Array) -> jax.Array:
  """(min, max) of P over present, then over absent entries."""
  pos = y > 0.5
  return jnp.stack([jnp.min(jnp.where(pos, p, jnp.inf)),
                    jnp.max(jnp.where(pos, p, -jnp.inf)),
                    jnp.min(jnp.where(pos, jnp.inf, p)),
                    jnp.max(jnp.where(pos, -jnp.inf, p))])


def fit_presence_params(concept_activations: Any, presence: Any, *,
                        max_iter: int = 100, tol: float = 1e-5
                        ) -> tuple[float, float]:
  """Fits a, b of C = sigmoid(a (P + b)) to presence labels.

  Criterion: maximum likelihood of the logistic model presence[i, m] ~
  Bernoulli(sigmoid(a (P[i, m] + b))), one slope and one offset shared by
  all concepts (Newton's method with step halving on standardized P). Data:
  images whose present concepts are known, e.g. a labelled probe set and a
  concept set holding its class names (presence = one-hot of the class).

  Args:
    concept_activations: (N, M) P.
    presence: (N, M) 0/1 presence labels, or (N,) int: the index of the one
      concept present in image i (the others absent).
    max_iter: most Newton steps.
    tol: stop when the largest change of a standardized parameter is below
      (or when the log-likelihood changes by < 1e-6 of itself).

  Returns:
    (a, b) floats.

  Raises:
    ValueError: shapes that do not match, labels that are not 0/1, all
      labels equal, or labels perfectly separated by P (no finite fit).
  """
  p = _as_matrix(concept_activations, "concept_activations",
                 "N images, M concepts")
  n, m = p.shape
  y = np.asarray(presence)
  if y.ndim == 1:
    if y.shape[0] != n or not np.issubdtype(y.dtype, np.integer):
      raise ValueError(f"presence of shape {y.shape} must be (N,) = ({n},) "
                       "concept indices or (N, M) 0/1 labels")
    if y.min() < 0 or y.max() >= m:
      raise ValueError(f"presence holds concept indices in [{y.min()}, "
                       f"{y.max()}]; allowed: 0..{m - 1}")
    y = np.eye(m, dtype=np.float32)[y]
  if y.shape != (n, m):
    raise ValueError(f"presence has shape {y.shape}; expected ({n}, {m}) "
                     "like concept_activations, or ({n},)")
  if not np.all((y == 0) | (y == 1)):
    raise ValueError("presence must hold only 0 and 1")
  positives = int(y.sum())
  if positives in (0, y.size):
    raise ValueError(f"presence has {positives} positives of {y.size}; "
                     "both present and absent labels are needed")
  yj = jnp.asarray(y, jnp.float32)
  lowest_pos, highest_pos, lowest_neg, highest_neg = (
      float(v) for v in _class_ranges(p, yj))
  if lowest_pos >= highest_neg or highest_pos <= lowest_neg:
    raise ValueError("presence is perfectly separated by "
                     "concept_activations (a threshold on P splits present "
                     "from absent); no finite a, b fit")
  return _logistic_fit(p, yj, max_iter=max_iter, tol=tol)


def _logistic_fit(p: jax.Array, y: jax.Array, *, max_iter: int = 100,
                  tol: float = 1e-5) -> tuple[float, float]:
  """a, b maximising sum y log C + (1 - y) log(1 - C), C = sigmoid(a (P +
  b)), for targets y in [0, 1] (Newton's method with step halving on
  standardized P)."""
  mu = float(jnp.mean(p))
  sd = float(jnp.std(p))
  if sd == 0:
    raise ValueError("concept_activations is constant; a and b cannot be "
                     "fitted")
  pz = (p - mu) / sd
  rate = float(jnp.mean(y))
  theta = np.array([1.0, math.log(rate / (1.0 - rate))])

  def moments(t):
    return np.asarray(_logistic_moments(pz, y, jnp.float32(t[0]),
                                        jnp.float32(t[1])), np.float64)

  mom = moments(theta)
  for _ in range(max_iter):
    grad = mom[1:3]
    hess = np.array([[mom[3], mom[4]], [mom[4], mom[5]]])
    step = np.linalg.solve(hess + 1e-12 * np.eye(2), grad)
    scale = 1.0
    while True:
      cand = theta - scale * step
      new = moments(cand)
      if new[0] >= mom[0] - 1e-6 * abs(mom[0]) or scale < 1e-4:
        break
      scale /= 2
    gain = new[0] - mom[0]
    theta, mom = cand, new
    # float32 sums: a log-likelihood gain below their rounding is no gain.
    if (np.max(np.abs(scale * step)) < tol or
        abs(gain) <= 1e-6 * abs(mom[0])):
      break
  else:
    raise ValueError(f"the fit of a, b did not converge in {max_iter} "
                     "Newton steps")
  w, c = theta
  if not w > 0:
    raise ValueError(f"the fitted slope a={w / sd:.4g} is not positive: "
                     "presence decreases with concept_activations")
  a = w / sd
  return float(a), float(c / w * sd - mu)


def presence_pseudo_labels(concept_activations: Any, top_fraction: float
                           ) -> np.ndarray:
  """(N, M) 0/1: concept m counts as present in image i when it is among
  the k = max(1, round(M * top_fraction)) largest P[i, :] (ties by index).
  """
  p = np.asarray(concept_activations, np.float32)
  m = p.shape[1]
  k = max(1, int(round(m * top_fraction)))
  if k >= m:
    raise ValueError(f"top_fraction={top_fraction} marks all {m} concepts "
                     "present; it must leave some absent")
  top = np.argpartition(-p, k - 1, axis=1)[:, :k]
  labels = np.zeros(p.shape, np.float32)
  np.put_along_axis(labels, top, 1.0, axis=1)
  return labels


def fit_presence_from_p(concept_activations: Any, *,
                        top_fraction: float = PRESENCE_TOP_FRACTION,
                        max_images: int = PRESENCE_FIT_IMAGES, seed: int = 0,
                        smoothing: float = 0.0) -> tuple[float, float]:
  """a, b of C = sigmoid(a (P + b)) fitted to a backbone's own P, no labels.

  Each image's top `top_fraction` of the concepts by P are taken as its
  present concepts (`presence_pseudo_labels`) and a, b fitted to them by
  maximum likelihood (`fit_presence_params`), on at most `max_images`
  images (a seeded sample). The pseudo-labels depend only on each image's
  ranking of the concepts, so for P' = s P + t (s > 0) the fit gives
  a' = a / s, b' = s b - t: the same C. So C means the same for every
  backbone, whatever its range of cosines: near 1 where a concept is among
  an image's best, near 0 where it is far below.

  Args:
    concept_activations: (N, M) P of the backbone.
    top_fraction: share of concepts present per image (0, 1).
    max_images: images used at most.
    seed: of the image sample.
    smoothing: fit targets y (1 - 2 smoothing) + smoothing instead of the
      0/1 pseudo-labels: a finite fit even where P separates them (as it
      does when every image ranks the concepts alike, e.g. a random
      backbone); 0 fits the labels themselves.

  Returns:
    (a, b) floats.

  Raises:
    ValueError: P not 2-D, top_fraction marking no or every concept, or
      the fit failing (see fit_presence_params; with smoothing=0 a P that
      separates the pseudo-labels).
  """
  if not 0.0 < top_fraction < 1.0:
    raise ValueError(f"top_fraction={top_fraction!r} must be in (0, 1)")
  if not isinstance(max_images, (int, np.integer)) or max_images < 2:
    raise ValueError(f"max_images={max_images!r} must be an int >= 2")
  p = np.asarray(concept_activations)
  if p.ndim != 2 or min(p.shape) < 2:
    raise ValueError(f"concept_activations must be (N, M) with N, M >= 2; "
                     f"got shape {p.shape}")
  rows = np.arange(p.shape[0])
  if p.shape[0] > max_images:
    rows = np.sort(np.random.default_rng(seed).choice(
        p.shape[0], max_images, replace=False))
  p = np.asarray(p[rows], np.float32)
  labels = presence_pseudo_labels(p, top_fraction)
  if not smoothing:
    return fit_presence_params(p, labels)
  if not 0.0 < smoothing < 0.5:
    raise ValueError(f"smoothing={smoothing!r} must be in [0, 0.5)")
  targets = labels * (1.0 - 2.0 * smoothing) + smoothing
  return _logistic_fit(_as_matrix(p, "concept_activations",
                                  "N images, M concepts"),
                       jnp.asarray(targets, jnp.float32))


@dataclasses.dataclass(frozen=True)
class PresenceParams:
  """The presence parameters a run's P is scored with.

  Attributes:
    a: slope.
    b: offset.
    source: "documented" (DOCUMENTED_PRESENCE), "fitted" (from the
      backbone's own P), "given" (options), or "default" (the documented
      CLIP values, when no fit was possible: a constant P).
    backbone: the backbone's name ("" for a P given as a file).
    note: how a fit was made if not plainly (smoothed labels), or why it
      fell back to the default; else "".
  """
  a: float
  b: float
  source: str
  backbone: str = ""
  note: str = ""

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    if self.source == "fitted":
      out.update(top_fraction=PRESENCE_TOP_FRACTION,
                 max_images=PRESENCE_FIT_IMAGES)
    return out

  @classmethod
  def from_json(cls, obj: dict[str, Any]) -> "PresenceParams":
    return cls(a=float(obj["a"]), b=float(obj["b"]),
               source=str(obj.get("source", "")),
               backbone=str(obj.get("backbone", "")),
               note=str(obj.get("note", "")))


def presence_params_for(backbone: str, concept_activations: Any = None, *,
                        seed: int = 0) -> PresenceParams:
  """The presence parameters of a backbone: documented ones, else fitted
  to its own P (`fit_presence_from_p`; to smoothed pseudo-labels where P
  separates them), else (no fit possible) the default with a note saying
  why.

  Args:
    backbone: the backbone's name (clip_model), or "" for a P of unknown
      origin.
    concept_activations: its (N, M) P, needed unless documented.
    seed: of the fit's image sample.
  """
  if backbone in DOCUMENTED_PRESENCE:
    a, b = DOCUMENTED_PRESENCE[backbone]
    return PresenceParams(a, b, "documented", backbone)
  if concept_activations is None:
    raise ValueError(f"backbone {backbone!r} has no documented presence "
                     "parameters; its P is needed to fit them")
  note = ""
  try:
    try:
      a, b = fit_presence_from_p(concept_activations, seed=seed)
    except ValueError as e:
      if "separated" not in str(e):
        raise
      a, b = fit_presence_from_p(concept_activations, seed=seed,
                                 smoothing=PRESENCE_SMOOTHING)
      note = (f"P separates the pseudo-labels (every image ranks its top "
              f"concepts alike); fitted to labels smoothed by "
              f"{PRESENCE_SMOOTHING:g}")
  except ValueError as e:
    return PresenceParams(DEFAULT_PRESENCE_A, DEFAULT_PRESENCE_B, "default",
                          backbone, note=f"fit failed: {e}"[:300])
  return PresenceParams(a, b, "fitted", backbone, note)


def run_backbone(config: dict[str, Any]) -> str:
  """The backbone name of a run's options: its clip_model (the default
  CLIP for runs that do not name one), "" when P was given as a file."""
  if config.get("concept_activations"):
    return ""
  return str(config.get("clip_model") or clip_loading.DEFAULT_MODEL)


def run_presence_params(run: Any) -> PresenceParams:
  """The presence parameters of a results.Run: those describe_neurons
  wrote into it (config.json "concept_presence"), else (older runs) picked
  by `presence_params_for` for its backbone from its P."""
  recorded = run.config.get("concept_presence")
  if isinstance(recorded, dict) and "a" in recorded and "b" in recorded:
    return PresenceParams.from_json(recorded)
  backbone = run_backbone(run.config)
  p = None if backbone in DOCUMENTED_PRESENCE else run.concept_activations()
  return presence_params_for(backbone, p)


# ----------------------------------------------------------------------------
# Held-out split.
# ----------------------------------------------------------------------------


def split_indices(num_images: int, split: str | float = "half",
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A seeded split of the probe images into a fit part and a held-out part.

  Args:
    num_images: N.
    split: "half" (ceil(N/2) images held out), "all" (every image is both
      fitted and held out), or a float in (0, 1): the held-out fraction
      (round(N * split) images).
    seed: seed of the split (numpy default_rng).

  Returns:
    (fit, heldout): sorted int64 image indices; disjoint unless split="all".

  Raises:
    ValueError: an unknown split, or fewer than MIN_HELDOUT held-out images.
  """
  if (not isinstance(num_images, (int, np.integer)) or
      isinstance(num_images, bool) or num_images < 1):
    raise ValueError(f"num_images must be a positive int; got {num_images!r}")
  n = int(num_images)
  if isinstance(split, str):
    if split == "all":
      num_held = n
    elif split == "half":
      num_held = n - n // 2
    else:
      raise ValueError(f"unknown split {split!r}; allowed: 'half', 'all' or a "
                       "held-out fraction in (0, 1)")
  elif (isinstance(split, (float, np.floating)) and 0.0 < split < 1.0):
    num_held = int(round(n * float(split)))
  else:
    raise ValueError(f"unknown split {split!r}; allowed: 'half', 'all' or a "
                     "held-out fraction in (0, 1)")
  if num_held < MIN_HELDOUT:
    raise ValueError(f"split={split!r} of {n} images leaves {num_held} "
                     f"held-out images; at least {MIN_HELDOUT} are needed")
  if split == "all":
    everything = np.arange(n)
    return everything, everything.copy()
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[num_held:]), np.sort(perm[:num_held])


# ----------------------------------------------------------------------------
# Simulation scores.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SimulationScores:
  """Simulation scores of a layer's explanations on held-out images.

  Attributes:
    correlation: float32 (K,) Pearson correlation (NaN: constant neuron or
      prediction).
    spearman: float32 (K,) Spearman correlation (NaN likewise).
    auprc: float32 (K,) average precision for the neuron's top images (NaN:
      constant neuron).
    heldout: int64 (H,) the held-out image indices used.
  """
  correlation: np.ndarray
  spearman: np.ndarray
  auprc: np.ndarray
  heldout: np.ndarray


def explanation_arrays(explanations: Any, num_neurons: int,
                       num_concepts: int
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Explanations as padded arrays (concepts, weights, bias).

  Args:
    explanations: one of
      - (K,) ints: one concept (label) per neuron, prediction C[:, m];
      - a tuple (concepts (K, L) int, weights (K, L) float, bias (K,) float)
        with concept -1 marking unused slots: prediction C[:, S] @ w + bias;
      - a sequence of K items, each an int or (indices, weights, bias).
    num_neurons: K.
    num_concepts: M.

  Returns:
    concepts int32 (K, L) (unused slots 0), weights float32 (K, L) (unused
    slots 0), bias float32 (K,).
  """
  k_total = num_neurons
  if (isinstance(explanations, tuple) and len(explanations) == 3 and
      np.ndim(explanations[0]) == 2):
    idx = np.asarray(explanations[0])
    w = np.asarray(explanations[1], np.float32)
    bias = np.asarray(explanations[2], np.float32)
  else:
    arr = None
    try:
      arr = np.asarray(explanations)
    except ValueError:  # Ragged per-neuron lists.
      pass
    if arr is not None and arr.ndim == 1 and np.issubdtype(arr.dtype,
                                                           np.integer):
      idx = arr[:, None]
      w = np.ones(idx.shape, np.float32)
      bias = np.zeros(arr.shape, np.float32)
    else:
      idx, w, bias = _pad_explanations(explanations)
  if not np.issubdtype(idx.dtype, np.integer):
    raise ValueError(f"explanation concepts must be ints; got {idx.dtype}")
  if idx.shape[0] != k_total or w.shape != idx.shape or bias.shape != (
      k_total,):
    raise ValueError(
        f"explanations give concepts {idx.shape}, weights {w.shape}, bias "
        f"{bias.shape}; expected ({k_total}, L), ({k_total}, L), "
        f"({k_total},) for the K={k_total} neurons")
  if idx.size and (idx.min() < -1 or idx.max() >= num_concepts):
    raise ValueError(f"explanation concept indices span [{idx.min()}, "
                     f"{idx.max()}]; allowed: 0..{num_concepts - 1} (-1: "
                     "unused slot)")
  if not (np.all(np.isfinite(w)) and np.all(np.isfinite(bias))):
    raise ValueError("explanation weights and bias must be finite")
  unused = idx < 0
  return (np.where(unused, 0, idx).astype(np.int32),
          np.where(unused, 0.0, w).astype(np.float32), bias)


def _pad_explanations(items: Sequence[Any]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  rows = []
  for k, item in enumerate(items):
    if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
      rows.append(([int(item)], [1.0], 0.0))
    elif isinstance(item, (tuple, list)) and len(item) == 3:
      idx, w, bias = (np.atleast_1d(np.asarray(item[0])),
                      np.atleast_1d(np.asarray(item[1], np.float32)),
                      float(item[2]))
      if idx.shape != w.shape or idx.ndim != 1:
        raise ValueError(f"explanation of neuron {k} has {idx.shape} concepts "
                         f"but {w.shape} weights")
      rows.append((idx.tolist(), w.tolist(), bias))
    else:
      raise ValueError(f"explanation of neuron {k} is {item!r}; expected a "
                       "concept index or (indices, weights, bias)")
  width = max([len(r[0]) for r in rows] + [1])
  idx = np.full((len(rows), width), -1, np.int64)
  w = np.zeros((len(rows), width), np.float32)
  for k, (i, ww, _) in enumerate(rows):
    idx[k, :len(i)] = i
    w[k, :len(ww)] = ww
  return idx, w, np.array([r[2] for r in rows], np.float32)


def _pearson(x: jax.Array, y: jax.Array) -> jax.Array:
  """Pearson correlation of (H,) vectors; NaN if either is constant."""
  xc = x - jnp.mean(x)
  yc = y - jnp.mean(y)
  r = jnp.sum(xc * yc) / (jnp.sqrt(jnp.sum(xc * xc)) *
                          jnp.sqrt(jnp.sum(yc * yc)))
  constant = (jnp.max(x) == jnp.min(x)) | (jnp.max(y) == jnp.min(y))
  return jnp.where(constant, jnp.nan, jnp.clip(r, -1.0, 1.0))


def _average_ranks(x: jax.Array) -> jax.Array:
  """0-based ranks of an (H,) vector; tied values share their mean rank."""
  s = jnp.sort(x)
  lo = jnp.searchsorted(s, x, side="left")
  hi = jnp.searchsorted(s, x, side="right")
  return (lo + hi - 1).astype(jnp.float32) * 0.5


def _average_precision(act: jax.Array, score: jax.Array,
                       num_positive: int) -> jax.Array:
  """AP of `score` for the top num_positive images of `act`, (H,) each."""
  h = act.shape[0]
  _, top = jax.lax.top_k(act, num_positive)
  positive = jnp.zeros((h,), jnp.float32).at[top].set(1.0)
  order = jnp.argsort(-score, stable=True)
  neg_sorted = -score[order]  # Ascending.
  pos_sorted = positive[order]
  tp = jnp.cumsum(pos_sorted)
  # Last position of each position's tie group: a tie group is one threshold.
  end = jnp.searchsorted(neg_sorted, neg_sorted, side="right") - 1
  precision = tp[end] / (end + 1).astype(jnp.float32)
  ap = jnp.sum(pos_sorted * precision) / num_positive
  return jnp.where(jnp.max(act) == jnp.min(act), jnp.nan, ap)


@functools.partial(jax.jit, static_argnames=("num_positive", "chunk"))
def _simulate(act: jax.Array, p_held: jax.Array, idx: jax.Array,
              weights: jax.Array, bias: jax.Array, a: jax.Array,
              b: jax.Array, *, num_positive: int, chunk: int) -> jax.Array:
  """(3, K) correlation, spearman, auprc of held-out act (H, K)."""
  h, k = act.shape
  # Concepts as rows: a chunk gathers contiguous rows, not strided columns.
  p_t = p_held.T
  num_chunks = -(-k // chunk)
  pad = num_chunks * chunk - k

  def padded(x):
    return jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1)).reshape(
        (num_chunks, chunk) + x.shape[1:])

  def one_chunk(xs):
    act_c, idx_c, w_c, bias_c = xs  # (c, H), (c, L), (c, L), (c,)
    rows = p_t[idx_c.reshape(-1)]  # (c*L, H): the explanations' concepts.
    pres = jax.nn.sigmoid(a * (rows + b)).reshape(chunk, -1, h)
    pred = jnp.einsum("clh,cl->ch", pres, w_c,
                      precision=jax.lax.Precision.HIGHEST) + bias_c[:, None]
    corr = jax.vmap(_pearson)(act_c, pred)
    spear = jax.vmap(_pearson)(jax.vmap(_average_ranks)(act_c),
                               jax.vmap(_average_ranks)(pred))
    auprc = jax.vmap(functools.partial(_average_precision,
                                       num_positive=num_positive))(
                                           act_c, pred)
    return jnp.stack([corr, spear, auprc])

  out = jax.lax.map(one_chunk, (padded(act.T), padded(idx), padded(weights),
                                padded(bias)))  # (chunks, 3, c)
  return jnp.moveaxis(out, 1, 0).reshape(3, -1)[:, :k]


def simulation_scores(activations: Any, concept_activations: Any,
                      explanations: Any, *, a: float = DEFAULT_PRESENCE_A,
                      b: float = DEFAULT_PRESENCE_B,
                      split: str | float = "half", seed: int = 0,
                      top_fraction: float = 0.05,
                      chunk_size: int = _SIM_CHUNK) -> SimulationScores:
  """Scores explanations by how well they predict held-out activations.

  Each neuron's prediction is C[:, m] for a one-concept label, else
  C[:, S] @ w + bias, with C = sigmoid(a (P + b)); see the module docstring
  for the three scores and how ties and constant inputs are handled.

  Args:
    activations: (N, K) activations of K neurons on N images.
    concept_activations: (N, M) P.
    explanations: per neuron a concept index, or a weighted list of concepts
      (see `explanation_arrays` for the accepted forms).
    a: presence slope (depends on the CLIP model; see fit_presence_params).
    b: presence offset.
    split: held-out images (see split_indices): "half", "all" or a fraction.
    seed: seed of the split.
    top_fraction: share of held-out images that are AUPRC positives.
    chunk_size: neurons per chunk.

  Returns:
    SimulationScores with (K,) correlation, spearman and auprc.
  """
  _check_presence_params(a, b)
  if not 0.0 < top_fraction <= 1.0:
    raise ValueError(f"top_fraction={top_fraction} must be in (0, 1]")
  if (not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1):
    raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
  act, p = similarity.validate_inputs(activations, concept_activations)
  n, k = act.shape
  _, heldout = split_indices(n, split, seed)
  idx, weights, bias = explanation_arrays(explanations, k, p.shape[1])
  num_positive = max(1, int(math.floor(len(heldout) * top_fraction)))
  held = jnp.asarray(heldout)
  out = np.asarray(_simulate(
      act[held], p[held], jnp.asarray(idx), jnp.asarray(weights),
      jnp.asarray(bias), jnp.float32(a), jnp.float32(b),
      num_positive=num_positive, chunk=int(min(chunk_size, k))))
  return SimulationScores(correlation=out[0], spearman=out[1], auprc=out[2],
                          heldout=heldout)


# Label p-values live in their own module; re-exported for one import.
label_pvalues = significance.label_pvalues
bh_qvalues = significance.bh_qvalues
LabelPValues = significance.LabelPValues


def parse_split(value: Any) -> str | float:
  """The split option: "half", "all" or a held-out fraction in (0, 1)."""
  if isinstance(value, str) and value.strip() in ("half", "all"):
    return value.strip()
  try:
    fraction = float(value)
  except (TypeError, ValueError):
    fraction = float("nan")
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"split={value!r} is not valid; allowed: half, all or a "
                     "held-out fraction in (0, 1)")
  return fraction
