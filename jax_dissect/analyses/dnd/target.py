"""The network being dissected, as Describe-and-Dissect runs it.

`Target` bundles a Flax module (linen or nnx) with its variables, its
eval preprocessing and how to pool a layer, and runs it on PIL images in
fixed-size, jitted batches (padded, so each function compiles once):

- `pooled(images, layer)`: (n, K) pooled activations of all K neurons
  (conv maps averaged or maxed over space, token maps their CLS token,
  (B, C) kept; as jax_dissect.models.capture);
- `maps(images, layer, units)`: (n, h, w, len(units)) spatial maps of
  some neurons of a conv layer, or None for a layer without space.
- `input_region(size)`: which part of an image of that size the model sees
  after preprocessing (its center crop), so a map can be laid back on the
  image where it belongs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np
from PIL import Image

from jax_dissect import models
from jax_dissect.analyses.dnd import regions
from jax_dissect.data import preprocess
from jax_dissect.models import capture as activations
from jax_dissect.models import weights_fingerprint


@dataclasses.dataclass
class Target:
  """A target network and how to run it on images.

  Attributes:
    module: a Flax linen or nnx module.
    variables: linen variables; nnx: None, an nnx.State or its pure dict.
    transform: PIL image -> (S, S, 3) float32 model input; an
      `preprocess.ImageTransform` also tells `input_region`.
    name: a readable name, part of cache keys.
    pool: "avg" or "max" pooling of conv maps (the original: "avg").
    token_pool: "cls" or "mean" pooling of (B, T, C) token maps.
    batch_size: images per jitted call.
    apply_fn: optional function running the model (see activations).
    apply_kwargs: extra keyword arguments of the call (hashable values).
  """
  module: Any
  variables: Any
  transform: Callable[[Image.Image], np.ndarray]
  name: str = "target"
  pool: str = "avg"
  token_pool: str = "cls"
  batch_size: int = 32
  apply_fn: Callable | None = None
  apply_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.pool = activations.canonical_pool(self.pool)
    self.token_pool = activations.canonical_token_pool(self.token_pool)
    if self.batch_size < 1:
      raise ValueError(f"batch_size={self.batch_size}; must be >= 1")
    self._device_variables = None

  @classmethod
  def load(cls, name: str, weights: str | None = None, seed: int = 0,
           **kwargs) -> "Target":
    """The target describe_neurons' options name (models.load_target).

    Args:
      name: a registry name or `package.module:factory` (target_model).
      weights: hub id, file, directory or "random"; None for the default
        (target_weights).
      seed: seed of weights="random" (target_seed).
      **kwargs: Target attributes (pool, token_pool, batch_size...).
    """
    spec, module, variables = models.load_target(name, weights, seed)
    kwargs.setdefault("name", name)
    return cls(module, variables, spec.transform, **kwargs)

  @functools.cached_property
  def identity(self) -> str:
    """Cache key: name, weights fingerprint, preprocessing and pooling."""
    variables = self.variables
    if variables is None:  # An nnx module holding its own state.
      from flax import nnx  # pylint: disable=g-import-not-at-top
      variables = nnx.state(self.module)
    transform = getattr(self.transform, "identity", None)
    return "|".join([
        self.name, type(self.module).__name__,
        weights_fingerprint(variables)[:24],
        transform() if callable(transform) else repr(self.transform),
        self.pool, self.token_pool, _callable_name(self.apply_fn),
        repr(sorted(self.apply_kwargs.items()))])

  def _variables(self) -> Any:
    if self._device_variables is None:
      self._device_variables = jax.device_put(self.variables)
    return self._device_variables

  @functools.cached_property
  def _input_shape(self) -> tuple[int, ...]:
    return self.transform(Image.new("RGB", (8, 8))).shape

  @functools.cached_property
  def layer_shapes(self) -> dict[str, tuple[int, ...]]:
    """{layer: output shape for one image}, for every capturable layer."""
    return activations.list_layers(
        self.module, self.variables, (1,) + tuple(self._input_shape),
        apply_fn=self.apply_fn, **self.apply_kwargs)

  def check_layer(self, layer: str) -> tuple[int, ...]:
    """The output shape of `layer` for one image.

    Raises:
      ValueError: for an unknown layer, listing the valid ones.
    """
    shapes = self.layer_shapes
    if layer not in shapes:
      raise activations.unknown_layer_error([layer], list(shapes))
    return shapes[layer]

  def input_region(self, size: tuple[int, int]) -> regions.Box | None:
    """Box of an image of (width, height) `size` that the model input shows.

    Known for `preprocess.ImageTransform` (resize then center crop); None
    (the whole image) for any other transform.
    """
    t = self.transform
    if not isinstance(t, preprocess.ImageTransform):
      return None
    width, height = size
    if t.resize_mode == "square":
      scale_x, scale_y = width / t.resize, height / t.resize
    else:
      scale_x = scale_y = min(width, height) / t.resize
    side_x, side_y = t.crop * scale_x, t.crop * scale_y
    x0, y0 = (width - side_x) / 2, (height - side_y) / 2
    return (int(round(x0)), int(round(y0)), int(round(x0 + side_x)),
            int(round(y0 + side_y)))

  def _batches(self, images: Sequence[Image.Image]):
    """Yields (padded input batch, rows) of preprocessed images."""
    for start in range(0, len(images), self.batch_size):
      chunk = [self.transform(im) for im in images[start:start +
                                                   self.batch_size]]
      batch = np.stack(chunk).astype(np.float32)
      rows = batch.shape[0]
      if rows < self.batch_size:
        pad = np.zeros((self.batch_size - rows,) + batch.shape[1:],
                       batch.dtype)
        batch = np.concatenate([batch, pad])
      yield batch, rows

  def pooled(self, images: Sequence[Image.Image], layer: str) -> np.ndarray:
    """Pooled activations of all neurons of `layer`.

    Returns:
      (n, K) float32 numpy, one row per image.
    """
    out = []
    for batch, rows in self._batches(images):
      pooled = activations.capture_pooled(
          self.module, self._variables(), batch, [layer], self.pool,
          token_pool=self.token_pool, apply_fn=self.apply_fn,
          **self.apply_kwargs)[layer]
      out.append(np.asarray(pooled[:rows], np.float32))
    if not out:
      return np.zeros((0, self.check_layer(layer)[-1]), np.float32)
    return np.concatenate(out)

  def maps(self, images: Sequence[Image.Image], layer: str,
           units: Sequence[int]) -> np.ndarray | None:
    """Spatial activation maps of `units` of a conv layer.

    Returns:
      (n, h, w, len(units)) float32 numpy for a (B, H, W, C) layer; None
      for token (B, T, C) and vector (B, C) layers, which have no map.
    """
    if len(self.check_layer(layer)) != 4:
      return None
    units = np.asarray(units, np.int64)
    out = []
    for batch, rows in self._batches(images):
      full = activations.capture_outputs(
          self.module, self._variables(), batch, [layer],
          apply_fn=self.apply_fn, **self.apply_kwargs)[layer]
      out.append(np.asarray(full[:rows], np.float32)[..., units])
    return np.concatenate(out)


def _callable_name(fn: Callable | None) -> str:
  if fn is None:
    return ""
  return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', fn)}"
