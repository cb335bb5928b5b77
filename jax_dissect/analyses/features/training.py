"""Training a TopK sparse autoencoder, data parallel over devices.

train_sae(activations, num_features) follows the practices of Gao et al.
(2024, "Scaling and evaluating sparse autoencoders") that make TopK SAEs
train well:

- Inputs are normalised with a mean (C,) and a scalar scale, estimated on
  the first shuffle window and stored with the model, so that a
  normalised row has mean squared norm C.
- A pre-encoder bias b_pre is subtracted before encoding and added back
  after decoding; the encoder starts as the transpose of the decoder.
- Decoder rows (feature directions) have unit norm: the gradient's
  component along each row is removed before the optimiser step, and the
  rows are renormalised after it.
- Loss = mean squared error of the normalised reconstruction (per channel)
  + aux_coef * AuxK: the rows' residual e (held fixed) is reconstructed
  from the k_aux largest pre-activations of the dead latents alone
  (those that fired on none of the last `dead_after` rows);
  AuxK = ||e - e_hat||^2 / ||e||^2 over the batch (0 while none is dead).
  This revives dead latents.
- Adam (b1 0.9, b2 0.999, eps 6.25e-10) with gradient clipping (global
  norm 1), optax.

Data parallel: a 1-D mesh over the devices (jax_dissect.data_parallel)
holds the parameters, optimiser state and dead-latent counters replicated;
each step's global batch of `batch_size` rows is split over the mesh's
batch axis, and the jitted step's reductions are global, so the devices
compute the same update as one device would, up to the rounding of the
sums (see tests/analyses/features/test_training.py for the tolerance).
Reproducible: the initial parameters come from jax.random.key(seed) and
the row order from numpy's default_rng(seed), not from global state; the
same seed and options give the same model.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_dissect.analyses.features import model
from jax_dissect.analyses.features import streams
from jax_dissect.runtime import data_parallel

# Rows of training when `epochs` is not given, for sources of known size.
DEFAULT_TRAINING_ROWS = 2**20
# By default a latent is dead after firing on none of the rows of this many
# steps (Gao et al.: 10M tokens, ~76 steps of their 131k-token batches). A
# much shorter window hurts: latents that fire rarely but usefully are then
# counted dead and AuxK pushes them off (in the planted tests, a window of
# 2 steps doubled the dead fraction).
DEAD_AFTER_STEPS = 64
# The counters are int32.
MAX_DEAD_AFTER = 2**30
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 6.25e-10}
CLIP_NORM = 1.0


@dataclasses.dataclass(frozen=True)
class Options:
  """train_sae's options (None: chosen from the data, see `resolve`).

  Attributes:
    k: non-zero codes per row; default min(32, max(1, C // 8), F).
    batch_size: rows of a step's global batch (split over the devices).
    lr: Adam's learning rate; default 2e-4 * sqrt(16384 / F), at most 2e-3
      (Gao et al.'s scaling of the rate with the number of latents).
    epochs: passes over the data; default enough passes for
      DEFAULT_TRAINING_ROWS rows (at least 1); 1 for an iterable.
    max_steps: stop after this many steps (default: no limit).
    k_aux: latents of the AuxK loss; default min(F, max(1, C // 2)).
    aux_coef: weight of the AuxK loss.
    dead_after: rows without firing after which a latent is dead (and
      trained by AuxK); default DEAD_AFTER_STEPS * batch_size.
    devices: "auto" (all local devices), a count, or a list of devices.
    memory_bytes: bound of the shuffle window (two float32 copies).
    log_every: log the losses every this many steps (0: never).
  """
  k: int | None = None
  batch_size: int = 4096
  lr: float | None = None
  epochs: int | None = None
  max_steps: int | None = None
  k_aux: int | None = None
  aux_coef: float = 1.0 / 32.0
  dead_after: int | None = None
  devices: Any = "auto"
  memory_bytes: int = 2**30
  log_every: int = 0


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(Options))


def _is_int(x: Any) -> bool:
  return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _positive_int(name: str, value: Any, allow_none: bool = True) -> None:
  if value is None and allow_none:
    return
  if not _is_int(value) or value < 1:
    raise ValueError(f"{name}={value!r}; must be a positive int")


def check_options(num_features: Any, options: dict[str, Any]) -> Options:
  """Checks num_features and the options (one-line ValueErrors)."""
  if not _is_int(num_features) or num_features < 1:
    raise ValueError(f"num_features={num_features!r}; must be an int >= 1 "
                     "(the number of SAE features)")
  unknown = sorted(set(options) - set(OPTION_NAMES))
  if unknown:
    raise ValueError(f"unknown train_sae option(s) {', '.join(unknown)}; "
                     f"allowed: {', '.join(OPTION_NAMES)}")
  opts = Options(**options)
  for name in ("k", "epochs", "max_steps", "k_aux", "dead_after",
               "memory_bytes"):
    _positive_int(name, getattr(opts, name))
  _positive_int("batch_size", opts.batch_size, allow_none=False)
  if opts.dead_after is not None and opts.dead_after > MAX_DEAD_AFTER:
    raise ValueError(f"dead_after={opts.dead_after}; must be at most "
                     f"{MAX_DEAD_AFTER} rows")
  if opts.k is not None and opts.k > num_features:
    raise ValueError(f"k={opts.k} is larger than num_features="
                     f"{num_features}; k must be between 1 and num_features")
  if opts.k_aux is not None and opts.k_aux > num_features:
    raise ValueError(f"k_aux={opts.k_aux} is larger than num_features="
                     f"{num_features}; k_aux must be between 1 and "
                     "num_features")
  if opts.lr is not None and not (
      isinstance(opts.lr, (int, float)) and not isinstance(opts.lr, bool)
      and 0 < opts.lr < math.inf):
    raise ValueError(f"lr={opts.lr!r}; must be a positive number")
  if not (isinstance(opts.aux_coef, (int, float)) and
          0 <= opts.aux_coef < math.inf):
    raise ValueError(f"aux_coef={opts.aux_coef!r}; must be a number >= 0")
  if not _is_int(opts.log_every) or opts.log_every < 0:
    raise ValueError(f"log_every={opts.log_every!r}; must be an int >= 0")
  return opts


def resolve(opts: Options, num_features: int, source: streams.RowSource
            ) -> dict[str, Any]:
  """The options with every None replaced by its value for this data."""
  c, f = source.width, num_features
  out = {name: getattr(opts, name) for name in OPTION_NAMES}
  if opts.k is None:
    out["k"] = min(32, max(1, c // 8), f)
  if opts.lr is None:
    out["lr"] = min(2e-3, 2e-4 * math.sqrt(16384 / f))
  if opts.k_aux is None:
    out["k_aux"] = min(f, max(1, c // 2))
  if opts.epochs is None:
    out["epochs"] = (1 if source.num_rows is None else
                     max(1, math.ceil(DEFAULT_TRAINING_ROWS /
                                      source.num_rows)))
  elif source.num_rows is None and not source.reusable and opts.epochs > 1:
    raise ValueError(f"epochs={opts.epochs} needs a source that can be read "
                     "again: an array, a .npy path, or a callable returning "
                     "a fresh iterable of blocks (not a one-pass iterator)")
  if opts.dead_after is None:
    out["dead_after"] = min(MAX_DEAD_AFTER,
                            DEAD_AFTER_STEPS * opts.batch_size)
  out["devices"] = None
  return out


# ----------------------------------------------------------------------------
# The jitted step.
# ----------------------------------------------------------------------------


def _loss(params, x, valid, dead, *, k, k_aux, aux_coef):
  """Loss of a batch x (B, C) normalised, valid (B,) float weights."""
  pre = model.pre_activations(params, x)
  codes = model.topk_relu(pre, k)
  err = x - model.decode_normalized(params, codes)
  n = jnp.maximum(jnp.sum(valid), 1.0)
  row_sq = jnp.sum(err * err, axis=1)
  rec = jnp.sum(valid * row_sq) / (n * x.shape[1])
  # AuxK: the dead latents' reconstruction of the (fixed) residual.
  # Only the dead latents' encoder and decoder weights learn from it: the
  # residual and its norm are constants, and b_pre is held fixed.
  # Skipped (lax.cond) while no latent is dead, the usual case.
  e = jax.lax.stop_gradient(err)
  e_norm = jax.lax.stop_gradient(jnp.sum(valid * row_sq))

  def aux_loss(p):
    pre_aux = model.pre_activations(
        {**p, "b_pre": jax.lax.stop_gradient(p["b_pre"])}, x)
    e_hat = model.topk_relu(pre_aux, k_aux, mask=dead) @ p["w_dec"]
    aux_num = jnp.sum(valid * jnp.sum((e - e_hat) ** 2, axis=1))
    return aux_num / jnp.maximum(e_norm, 1e-30)

  aux = jax.lax.cond(jnp.any(dead), aux_loss,
                     lambda p: jnp.zeros((), x.dtype), params)
  return rec + aux_coef * aux, (codes, rec, aux)


def make_step(optimizer: optax.GradientTransformation, *, k: int, k_aux: int,
              aux_coef: float, dead_after: int):
  """step(state, x, valid) -> (state, metrics), not yet jitted.

  state = (params, opt_state, since): since (F,) int32 counts the rows
  since each latent last fired (saturating at dead_after).
  """
  grad_fn = jax.value_and_grad(_loss, has_aux=True)

  def step(state, x, valid):
    params, opt_state, since = state
    dead = since >= dead_after
    (loss, (codes, rec, aux)), grads = grad_fn(
        params, x, valid, dead, k=k, k_aux=k_aux, aux_coef=aux_coef)
    w = params["w_dec"]
    g = grads["w_dec"]
    grads = {**grads,
             "w_dec": g - jnp.sum(g * w, axis=1, keepdims=True) * w}
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    w = params["w_dec"]
    params = {**params,
              "w_dec": w / jnp.linalg.norm(w, axis=1, keepdims=True)}
    fired = jnp.any((codes > 0) & (valid[:, None] > 0), axis=0)
    rows = jnp.sum(valid).astype(jnp.int32)
    since = jnp.where(fired, 0, jnp.minimum(since + rows, dead_after))
    metrics = {"loss": loss, "mse": rec, "aux": aux,
               "dead_fraction": jnp.mean(dead.astype(jnp.float32))}
    return (params, opt_state, since), metrics

  return step


@functools.lru_cache(maxsize=16)
def _jitted_step(lr: float, k: int, k_aux: int, aux_coef: float,
                 dead_after: int, devices: tuple[jax.Device, ...]):
  """The jitted step for these options and devices (kept, so that another
  train_sae call with the same ones does not compile it again)."""
  dp = data_parallel.DataParallel(list(devices))
  return jax.jit(
      make_step(make_optimizer(lr), k=k, k_aux=k_aux, aux_coef=aux_coef,
                dead_after=dead_after),
      in_shardings=(dp.replicated, dp.batch, dp.batch),
      out_shardings=(dp.replicated, dp.replicated))


def make_optimizer(lr: float) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(CLIP_NORM),
                     optax.adam(lr, **ADAM))


# ----------------------------------------------------------------------------
# Normalisation and fit figures.
# ----------------------------------------------------------------------------


def normalization(rows: np.ndarray) -> tuple[np.ndarray, float]:
  """(mean (C,), scale) so that (rows - mean) / scale has mean squared
  row norm C; scale is 1 for constant rows."""
  x = np.asarray(rows, np.float64)
  mean = x.mean(axis=0)
  var = float(np.mean(np.sum((x - mean) ** 2, axis=1)) / x.shape[1])
  scale = math.sqrt(var) if var > 0 else 1.0
  return mean.astype(np.float32), scale


@functools.lru_cache(maxsize=16)
def _make_fit_block(k: int):
  @jax.jit
  def fit_block(params, mean, scale, x, valid):
    codes = model.topk_relu(model.pre_activations(params, (x - mean) / scale),
                            k)
    x_hat = model.decode_normalized(params, codes) * scale + mean
    sse = jnp.sum(valid * jnp.sum((x - x_hat) ** 2, axis=1))
    l0 = jnp.sum(valid * jnp.sum(codes > 0, axis=1))
    fired = jnp.any((codes > 0) & (valid[:, None] > 0), axis=0)
    return sse, l0, fired
  return fit_block


class FitAccumulator:
  """Fraction of variance explained, mean L0 and dead fraction over rows."""

  def __init__(self, sae: model.SparseAutoencoder, block_rows: int = 4096):
    self._params = {n: jnp.asarray(v) for n, v in sae.params.items()}
    self._mean = jnp.asarray(sae.mean)
    self._scale = jnp.float32(sae.scale)
    self._fn = _make_fit_block(sae.k)
    self._block = block_rows
    self.sse = 0.0
    self.l0 = 0.0
    self.n = 0
    self.sum_x = np.zeros(sae.width, np.float64)
    self.sum_x2 = np.zeros(sae.width, np.float64)
    self.fired = np.zeros(sae.num_features, bool)

  def add(self, rows: np.ndarray) -> None:
    """Adds (r, C) rows."""
    for lo in range(0, rows.shape[0], self._block):
      part = np.asarray(rows[lo:lo + self._block], np.float32)
      size = part.shape[0]
      x64 = part.astype(np.float64)
      self.sum_x += x64.sum(axis=0)
      self.sum_x2 += (x64 * x64).sum(axis=0)
      valid = np.zeros(self._block, np.float32)
      valid[:size] = 1.0
      if size < self._block:
        part = np.concatenate(
            [part, np.zeros((self._block - size, part.shape[1]), np.float32)])
      sse, l0, fired = self._fn(self._params, self._mean, self._scale,
                                jnp.asarray(part), jnp.asarray(valid))
      self.sse += float(sse)
      self.l0 += float(l0)
      self.fired |= np.asarray(fired)
      self.n += size

  def figures(self) -> dict[str, Any]:
    total = float(np.sum(self.sum_x2 - self.sum_x ** 2 / max(self.n, 1)))
    fve = 1.0 - self.sse / total if total > 0 else float("nan")
    return {"fraction_of_variance_explained": fve,
            "mean_l0": self.l0 / max(self.n, 1),
            "dead_fraction": float(1.0 - self.fired.mean()),
            "rows": self.n}


def evaluate_sae(sae: model.SparseAutoencoder, activations: Any, *,
                 memory_bytes: int = 2**30) -> dict[str, Any]:
  """Fit figures of `sae` on activations (any source train_sae takes).

  Returns:
    {"fraction_of_variance_explained": 1 - sum ||x - x_hat||^2 /
     sum ||x - mean||^2 (the rows' own mean, in the layer's space),
     "mean_l0": mean non-zero codes per row, "dead_fraction": fraction of
     features that fire on none of the rows, "rows": rows measured}.
  """
  source = streams.as_source(activations)
  if source.width != sae.width:
    raise ValueError(f"activations have {source.width} channels; this SAE "
                     f"takes C={sae.width}")
  acc = FitAccumulator(sae)
  wrows = streams.window_rows_for(memory_bytes, source.width, 1)
  for window in streams.windows(source.blocks(None, wrows), wrows):
    acc.add(window)
  return acc.figures()


# ----------------------------------------------------------------------------
# train_sae.
# ----------------------------------------------------------------------------


def _host(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda a: np.array(a), tree)


def train_sae(activations: Any, num_features: int, *, seed: int = 0,
              **options) -> model.SparseAutoencoder:
  """Trains a TopK sparse autoencoder on a layer's activations.

  Args:
    activations: (N, C) rows, (B, T, C) token maps or (B, H, W, C) conv maps
      (maps are trained per position / token), as a numpy or jax array or a
      .npy path (memory-mapped, read in blocks); or an iterable of such
      blocks (one pass), or a callable returning a fresh iterable (one per
      epoch). Memory stays within about `memory_bytes` plus a block.
    num_features: F, the SAE's features (>= 1).
    seed: seed of the initial parameters and of the row order.
    **options: see `Options` (k, batch_size, lr, epochs, max_steps, k_aux,
      aux_coef, dead_after, devices, memory_bytes, log_every).

  Returns:
    The trained SparseAutoencoder. Its `fit` holds the fit figures
    (see `evaluate_sae`) measured with the final parameters on every
    training row for an array or a callable source, or on the last shuffle
    window for a one-pass iterable ("measured_on" says which), and
    "training_dead_fraction" (latents dead by the training counter at the
    end). Its `config` holds the resolved options and training facts.

  Raises:
    ValueError: (one line, before training) num_features < 1, k or k_aux
      outside 1..num_features, unknown options or bad values, activations
      of a bad shape, type or values.
  """
  opts = check_options(num_features, options)
  if not _is_int(seed):
    raise ValueError(f"seed={seed!r}; must be an int")
  dp = data_parallel.DataParallel(opts.devices)
  source = streams.as_source(activations)
  cfg = resolve(opts, num_features, source)
  width, f = source.width, num_features
  k, batch = cfg["k"], cfg["batch_size"]
  ndev = dp.num_devices
  call_rows = math.ceil(batch / ndev) * ndev
  wrows = streams.window_rows_for(cfg["memory_bytes"], width, batch)
  block_rows = max(1, wrows // 8) if (
      source.num_rows is None or source.num_rows > wrows) else wrows
  rng = np.random.default_rng([seed, 1])

  def epoch_windows():
    for _ in range(cfg["epochs"]):
      yield streams.windows(source.blocks(rng, block_rows), wrows)

  epochs = epoch_windows()
  first_epoch = next(epochs)
  first = next(first_epoch)
  mean, scale = normalization(first)

  params = model.init_params(jax.random.key(seed), width, f)
  optimizer = make_optimizer(cfg["lr"])
  state = (params, optimizer.init(params), jnp.zeros((f,), jnp.int32))
  state = dp.replicate(state)
  step = _jitted_step(cfg["lr"], k, cfg["k_aux"], float(cfg["aux_coef"]),
                      cfg["dead_after"], tuple(dp.devices))

  def all_windows():
    yield first
    yield from first_epoch
    for wins in epochs:
      yield from wins

  last_window = first
  steps = rows_seen = 0
  metrics = None
  start = time.perf_counter()

  def tracked():
    nonlocal last_window
    for w in all_windows():
      last_window = w
      yield w

  for x in streams.batches(tracked(), batch, rng):
    if cfg["max_steps"] is not None and steps >= cfg["max_steps"]:
      break
    size = x.shape[0]
    x = (x - mean) / np.float32(scale)
    valid = np.zeros(call_rows, np.float32)
    valid[:size] = 1.0
    if size < call_rows:
      x = np.concatenate([x, np.zeros((call_rows - size, width), np.float32)])
    x, valid = jax.device_put((x, valid), dp.batch)
    # One step in flight at a time: on host devices (XLA:CPU) two
    # overlapping steps can deadlock in their gradient all-reduce, whose
    # participants wait on a shared thread pool. The next batch is
    # prepared and sent before waiting.
    jax.block_until_ready(state)
    state, metrics = step(state, x, valid)
    steps += 1
    rows_seen += size
    if cfg["log_every"] and steps % cfg["log_every"] == 0:
      m = _host(metrics)
      logging.info("SAE step %d (%d rows): mse %.4g aux %.4g dead %.3f",
                   steps, rows_seen, m["mse"], m["aux"], m["dead_fraction"])
  params, _, since = _host(state)
  seconds = time.perf_counter() - start
  cfg.update({
      "seed": int(seed), "width": width, "num_features": f,
      "num_devices": ndev, "steps": steps, "rows_seen": rows_seen,
      "normalization_rows": int(first.shape[0]),
      "train_seconds": seconds,
      "source": ("array" if source.num_rows is not None else
                 "callable" if source.reusable else "iterable")})
  sae = model.SparseAutoencoder(params=params, mean=mean, scale=scale, k=k,
                                config=cfg)
  acc = FitAccumulator(sae)
  if source.reusable:
    for window in streams.windows(source.blocks(None, block_rows), wrows):
      acc.add(window)
    measured_on = "all training rows"
  else:
    acc.add(last_window)
    measured_on = "last shuffle window"
  sae.fit = {**acc.figures(), "measured_on": measured_on,
             "training_dead_fraction": float(np.mean(
                 since >= cfg["dead_after"])),
             "final_mse": (None if metrics is None else
                           float(_host(metrics)["mse"]))}
  return sae
