"""Capture and pool the outputs of named layers of any Flax linen module.

A layer is a submodule, named by its dotted path from the root module
("conv1", "layer4.2.conv3"); its captured value is the output of its
`__call__` (the last call if a module is called more than once). Capture
(`capture_intermediates` with a filter for just the requested paths) and
pooling run in one jitted function, so full feature maps stay on the device:

- (B, H, W, C) conv maps are pooled over space: "avg" (alias "mean") or "max";
- (B, T, C) token maps take the CLS token, index 0;
- (B, C) outputs are kept.

`iter_activations` walks a whole probe set in fixed-size batches and yields
pooled numpy batches; `collect_activations` gathers them into
{layer: (N, C) float32 numpy}.
"""

from __future__ import annotations

import difflib
import functools
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

POOL_MODES = ("avg", "max")
POOL_ALIASES = {"mean": "avg"}
_CALL = "__call__"


def canonical_pool(pool: str) -> str:
  """Returns "avg" or "max" for a pooling mode name (accepts alias "mean")."""
  mode = POOL_ALIASES.get(pool, pool)
  if mode not in POOL_MODES:
    raise ValueError(f"pool={pool!r}; allowed: {list(POOL_MODES)} "
                     f"(or aliases {sorted(POOL_ALIASES)})")
  return mode


def _flatten_calls(intermediates: Mapping[str, Any],
                   prefix: tuple[str, ...] = ()) -> dict[str, Any]:
  """{dotted path: last __call__ output} from an intermediates collection."""
  out = {}
  for name, value in intermediates.items():
    if name == _CALL:
      if prefix:  # The root module's own output is not a layer.
        out[".".join(prefix)] = value[-1]
    elif isinstance(value, Mapping):
      out.update(_flatten_calls(value, prefix + (name,)))
  return out


def list_layers(module: nn.Module, variables: Mapping[str, Any],
                input_shape: Sequence[int] = (1, 224, 224, 3),
                input_dtype: Any = jnp.float32,
                **apply_kwargs) -> dict[str, tuple[int, ...]]:
  """Capturable layer paths of `module` and the shapes of their outputs.

  Traced abstractly (jax.eval_shape): nothing is computed.

  Args:
    module: any Flax linen module.
    variables: its variables (arrays or ShapeDtypeStructs).
    input_shape: shape of the input batch, e.g. (B, H, W, 3).
    input_dtype: dtype of the input batch.
    **apply_kwargs: extra keyword arguments of module.apply.

  Returns:
    {dotted path: output shape} for every submodule whose `__call__` returns
    a single array, in the order the outputs are produced (a block's
    children before the block).
  """
  order = []  # Paths in the order their __call__ runs (filled at trace).

  def record(mdl: nn.Module, method_name: str) -> bool:
    if method_name == _CALL:
      path = ".".join(mdl.scope.path)
      if path and path not in order:
        order.append(path)
    return method_name == _CALL

  def capture_all(v, x):
    _, state = module.apply(v, x, capture_intermediates=record,
                            mutable=["intermediates"], **apply_kwargs)
    return state.get("intermediates", {})
  inter = jax.eval_shape(capture_all, variables,
                         jax.ShapeDtypeStruct(tuple(input_shape), input_dtype))
  found = _flatten_calls(inter)
  return {path: tuple(found[path].shape) for path in order
          if isinstance(found.get(path), jax.ShapeDtypeStruct)}


def unknown_layer_error(unknown: Sequence[str],
                        valid: Sequence[str]) -> ValueError:
  """A ValueError naming `unknown` layers, listing `valid` nearest first."""
  lines = []
  for name in unknown:
    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.0)
    lines.append(f"{name!r} (closest: {', '.join(close)})")
  nearest = difflib.get_close_matches(unknown[0], valid, n=len(valid),
                                      cutoff=0.0)
  ordered = nearest + [v for v in valid if v not in nearest]
  return ValueError(f"unknown layer(s): {'; '.join(lines)}. Valid layers "
                    f"({len(valid)}), nearest first: {', '.join(ordered)}")


def pool_output(value: jax.Array, pool: str = "avg",
                layer: str = "output") -> jax.Array:
  """Reduces one layer output to (B, C) float32.

  Args:
    value: (B, H, W, C), (B, T, C) or (B, C).
    pool: "avg"/"mean" or "max", for (B, H, W, C).
    layer: name used in the error message.

  Raises:
    ValueError: for outputs of another rank.
  """
  mode = canonical_pool(pool)
  if not hasattr(value, "ndim"):
    raise ValueError(f"layer {layer!r} outputs a {type(value).__name__}, not "
                     f"an array; capture one of its submodules instead")
  value = value.astype(jnp.float32)
  if value.ndim == 4:
    return jnp.mean(value, (1, 2)) if mode == "avg" else jnp.max(value, (1, 2))
  if value.ndim == 3:
    return value[:, 0, :]
  if value.ndim == 2:
    return value
  raise ValueError(f"layer {layer!r} outputs shape {value.shape}; pooling "
                   f"supports (B, H, W, C), (B, T, C) and (B, C)")


@functools.lru_cache(maxsize=32)
def _capture_fn(module: nn.Module, layers: tuple[str, ...], pool: str,
                apply_items: tuple[tuple[str, Any], ...]):
  """A jitted (variables, images) -> {layer: (B, C)} for these settings."""
  wanted = frozenset(layers)
  apply_kwargs = dict(apply_items)

  def keep(mdl: nn.Module, method_name: str) -> bool:
    return method_name == _CALL and ".".join(mdl.scope.path) in wanted

  def capture(variables, images):
    _, state = module.apply(variables, images, capture_intermediates=keep,
                            mutable=["intermediates"], **apply_kwargs)
    found = _flatten_calls(state.get("intermediates", {}))
    missing = [l for l in layers if l not in found]
    if missing:
      valid = list(list_layers(module, variables, images.shape, images.dtype,
                               **apply_kwargs))
      raise unknown_layer_error(missing, valid)
    return {l: pool_output(found[l], pool, l) for l in layers}

  return jax.jit(capture)


def capture_pooled(module: nn.Module, variables: Mapping[str, Any],
                   images: Any, layers: Sequence[str], pool: str = "avg",
                   **apply_kwargs) -> dict[str, jax.Array]:
  """Pooled activations of `layers` for one batch, in one jitted call.

  Compiled once per (module, layers, pool, apply_kwargs, input shape).
  Numpy variables are copied to the device on every call: for repeated
  calls pass `jax.device_put(variables)` (collect_activations does).

  Args:
    module: any Flax linen module (hashable, as linen modules are).
    variables: its variables.
    images: a batch, (B, H, W, 3) for image models.
    layers: dotted layer paths (see `list_layers`).
    pool: "avg" (alias "mean") or "max" spatial pooling of conv maps.
    **apply_kwargs: extra keyword arguments of module.apply (hashable
      values), e.g. deterministic=True.

  Returns:
    {layer: (B, C) float32 jax.Array}, in the order of `layers`.

  Raises:
    ValueError: for an unknown layer (listing the valid ones, nearest
      first), a bad pool mode, or an output of unsupported rank.
  """
  layers = tuple(layers)
  if not layers:
    raise ValueError("layers is empty; name at least one layer")
  pool = canonical_pool(pool)
  fn = _capture_fn(module, layers, pool, tuple(sorted(apply_kwargs.items())))
  pooled = fn(variables, images)
  return {l: pooled[l] for l in layers}  # jit returns keys sorted.


def _iter_batches(images: Any, batch_size: int) -> Iterator[np.ndarray]:
  if isinstance(images, (np.ndarray, jax.Array)):
    for start in range(0, images.shape[0], batch_size):
      yield images[start:start + batch_size]
  else:
    yield from images


def iter_activations(module: nn.Module, variables: Mapping[str, Any],
                     images: np.ndarray | Iterable[np.ndarray],
                     layers: Sequence[str], pool: str = "avg",
                     batch_size: int = 64, num_images: int | None = None,
                     log_every_s: float = 10.0,
                     **apply_kwargs) -> Iterator[dict[str, np.ndarray]]:
  """Yields pooled activations batch by batch, with bounded memory.

  One batch of inputs is on the device at a time (plus the one being
  computed, as dispatch is asynchronous: batch i + 1 is dispatched before
  batch i's results are copied back) and only the pooled (B, C) rows come
  back. Every batch is padded to `batch_size` so the function compiles once;
  the padding rows are dropped. Progress (counts, images/s, ETA) is logged
  with absl logging at most every `log_every_s` seconds.

  Args:
    module: any Flax linen module.
    variables: its variables (copied to the device once).
    images: an (N, H, W, 3) array, or an iterable of (B_i, H, W, 3) batches
      with B_i <= batch_size (e.g. a generator reading files).
    layers: dotted layer paths.
    pool: "avg" (alias "mean") or "max".
    batch_size: images per jitted call.
    num_images: total images, for the ETA when `images` is an iterable;
      taken from an array's first dimension.
    log_every_s: seconds between progress log lines.
    **apply_kwargs: extra keyword arguments of module.apply.

  Yields:
    {layer: (B_i, C) float32 numpy array} per input batch, in input order.

  Raises:
    ValueError: for a batch larger than `batch_size`, an unknown layer or a
      bad pool mode.
  """
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size}; must be >= 1")
  layers, pool = tuple(layers), canonical_pool(pool)
  if not layers:
    raise ValueError("layers is empty; name at least one layer")
  if num_images is None and isinstance(images, (np.ndarray, jax.Array)):
    num_images = int(images.shape[0])
  variables = jax.device_put(variables)  # Once, not once per batch.
  pending = None  # (pooled device arrays, rows) of the previous batch.
  done, start = 0, time.monotonic()
  last_log = start

  def fetch(item):
    pooled, rows = item
    return {l: np.asarray(pooled[l][:rows], np.float32) for l in layers}

  for batch in _iter_batches(images, batch_size):
    batch = np.asarray(batch)
    rows = batch.shape[0]
    if rows > batch_size:
      raise ValueError(f"a batch has {rows} images, more than "
                       f"batch_size={batch_size}")
    if rows < batch_size:
      pad = np.zeros((batch_size - rows,) + batch.shape[1:], batch.dtype)
      batch = np.concatenate([batch, pad])
    pooled = capture_pooled(module, variables, batch, layers, pool,
                            **apply_kwargs)
    if pending is not None:
      yield fetch(pending)
    pending = (pooled, rows)
    done += rows
    now = time.monotonic()
    if now - last_log >= log_every_s:
      last_log = now
      rate = done / max(now - start, 1e-9)
      if num_images:
        logging.info("activations: %d/%d images, %.1f images/s, ETA %.0f s",
                     done, num_images, rate,
                     (num_images - done) / max(rate, 1e-9))
      else:
        logging.info("activations: %d images, %.1f images/s", done, rate)
  if pending is not None:
    yield fetch(pending)
  elapsed = time.monotonic() - start
  logging.info("activations: %d images of %d layer(s) in %.1f s (%.1f "
               "images/s)", done, len(layers), elapsed,
               done / max(elapsed, 1e-9))


def collect_activations(module: nn.Module, variables: Mapping[str, Any],
                        images: np.ndarray | Iterable[np.ndarray],
                        layers: Sequence[str], pool: str = "avg",
                        batch_size: int = 64, num_images: int | None = None,
                        log_every_s: float = 10.0,
                        **apply_kwargs) -> dict[str, np.ndarray]:
  """Pooled activations of a whole probe set (see `iter_activations`).

  Returns:
    {layer: (N, C) float32 numpy array}, rows in input order.

  Raises:
    ValueError: as `iter_activations`, and for an empty probe set.
  """
  layers = tuple(layers)
  chunks = {l: [] for l in layers}
  for pooled in iter_activations(module, variables, images, layers, pool,
                                 batch_size, num_images, log_every_s,
                                 **apply_kwargs):
    for l in layers:
      chunks[l].append(pooled[l])
  if not chunks[layers[0]]:
    raise ValueError("no images: the probe set is empty")
  return {l: np.concatenate(chunks[l]) for l in layers}
