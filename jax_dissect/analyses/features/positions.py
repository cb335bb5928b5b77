"""Per-position activations of a run's layers, re-run from its target.

A run caches only pooled activations (N, C) per layer. To train an SAE on
every position of a conv map (H x W rows per image) or every token of a
token map (T rows), the run's target model and probe images are rebuilt
from its config.json (as the stability analysis does for pixel noise) and
the unpooled outputs captured (models.capture.capture_outputs). A layer's
maps then come in one of three ways, chosen from their size
N x positions x C x 4 bytes (estimated from the layer's output shape
before anything runs):

- cached (only when asked, cache_positions): saved in the run's cache in
  row shards (store.cache.ArrayCache.rows), so a killed run resumes at its
  first missing shard and a rerun reads them; refused with one line when
  they exceed max_cache_bytes or the cache disk's free space;
- in memory, when they fit in memory_bytes: one pass of the target (one
  layer at a time);
- streamed: the target runs again for each pass over them (each training
  epoch, the fit figures, the labels).
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any, Iterator, Sequence

from absl import logging
import numpy as np

from jax_dissect import models
from jax_dissect.data import loader
from jax_dissect.data import probes as data_lib
from jax_dissect.models import capture as act_lib
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import results as results_lib
from jax_dissect.store import shard_grid

# Bytes of one shard of cached maps (all cached layers of an image range).
SHARD_BYTES = 64 * 2**20
MODES = ("cached", "memory", "stream")


def human_bytes(n: float) -> str:
  for unit in ("B", "KB", "MB", "GB"):
    if n < 1000:
      return f"{n:.3g} {unit}"
    n /= 1000
  return f"{n:.3g} TB"


class RunTarget:
  """The run's target model and probe images, rebuilt from its config.

  Attributes:
    probe: the probe set (image i is row i of the run's A and P).
    spec, module, variables: the loaded target.
    shapes: {layer: output shape of one image} for every capturable layer.
    batch_size: images per forward pass.
  """

  def __init__(self, results: results_lib.Run, batch_size: int = 0):
    cfg = results.config
    if not cfg.get("target_model"):
      raise ValueError(f"{results.path} has no target_model in config.json: "
                       "cannot rebuild the target for positions=True")
    self.probe = data_lib.run_probe_set(results)
    self.spec, self.module, self.variables = models.load_target(
        cfg["target_model"], cfg.get("target_weights"),
        int(cfg.get("target_seed", 0)))
    size = self.spec.input_size
    self.shapes = {l: tuple(s[1:]) for l, s in act_lib.list_layers(
        self.module, self.variables, (1, size, size, 3)).items()}
    self.batch_size = batch_size or int(cfg.get("batch_size") or 64)
    self.identity = {"model": cfg["target_model"],
                     "weights": models.weights_fingerprint(self.variables),
                     "transform": self.spec.transform.identity()}

  def __len__(self) -> int:
    return len(self.probe)

  def check_layers(self, layers: Sequence[str]) -> None:
    unknown = [l for l in layers if l not in self.shapes]
    if unknown:
      raise act_lib.unknown_layer_error(unknown, list(self.shapes))

  def map_bytes(self, layer: str) -> int:
    """Bytes of the layer's float32 maps over the probe set."""
    return len(self) * int(np.prod(self.shapes[layer])) * 4

  def batches(self, layers: Sequence[str],
              ranges: Sequence[tuple[int, int]] | None = None
              ) -> Iterator[dict[str, np.ndarray]]:
    """{layer: (b, ...) float32 maps} per batch of the images of `ranges`
    (default all), in order; no batch spans two ranges."""
    ranges = list(ranges) if ranges is not None else [(0, len(self))]
    layers = list(layers)
    for batch in loader.range_batches(self.probe, ranges, self.batch_size,
                                      self.spec.transform):
      size = batch.shape[0]
      if size < self.batch_size:  # One compiled shape for every batch.
        batch = np.concatenate([batch, np.zeros(
            (self.batch_size - size,) + batch.shape[1:], batch.dtype)])
      out = act_lib.capture_outputs(self.module, self.variables, batch,
                                    layers)
      yield {l: np.asarray(out[l], np.float32)[:size] for l in layers}


@dataclasses.dataclass
class LayerMaps:
  """A layer's per-position maps: an array (cached or in memory) or a
  stream (`passes()` runs the target once more).

  Attributes:
    layer: the layer.
    shape: one image's map shape, e.g. (H, W, C) or (T, C).
    num_images: N.
    mode: "cached", "memory" or "stream".
    array: (N, ...) float32 maps (cached: memory-mapped), or None.
    key: the cache key of cached maps ("" otherwise).
    identity: what the maps are (layer, target model, weights, transform).
  """
  layer: str
  shape: tuple[int, ...]
  num_images: int
  mode: str
  array: np.ndarray | None = None
  key: str = ""
  identity: dict[str, Any] = dataclasses.field(default_factory=dict)
  _target: RunTarget | None = None

  @property
  def num_rows(self) -> int:
    """Training rows: one per position of every image."""
    return self.num_images * int(np.prod(self.shape[:-1]))

  @property
  def width(self) -> int:
    return int(self.shape[-1])

  def passes(self) -> Iterator[np.ndarray]:
    """One pass of (b, ...) map batches in image order."""
    if self.array is not None:
      step = max(1, 2**24 // max(1, int(np.prod(self.shape))))
      for lo in range(0, self.num_images, step):
        yield np.asarray(self.array[lo:lo + step], np.float32)
      return
    logging.info("features: running the target on %d images for %s",
                 self.num_images, self.layer)
    for batch in self._target.batches([self.layer]):
      yield batch[self.layer]

  def load(self) -> "LayerMaps":
    """Runs the target once and keeps the maps in memory (mode "memory";
    the others are left as they are); returns self."""
    if self.mode == "memory" and self.array is None:
      self.array = np.concatenate(list(self.passes()))
    return self

  def release(self) -> None:
    """Drops maps held in memory."""
    if self.mode == "memory":
      self.array = None

  def training_source(self) -> Any:
    """What train_sae takes: the array, or a callable of fresh passes."""
    return self.array if self.array is not None else self.passes


def positions_key(cache: cache_lib.ArrayCache, target: RunTarget,
                  layer: str, activations_id: dict[str, Any]) -> str:
  """Cache key of a layer's per-position maps: the target's identity and
  the run's pooled activations of the layer (which stand for the probe
  images, their order and preprocessing)."""
  return cache.key("positions", layer=layer, run_activations=activations_id,
                   **target.identity)


def plan(target: RunTarget, layers: Sequence[str], *, cache_positions: bool,
         memory_bytes: int, max_cache_bytes: int,
         cache: cache_lib.ArrayCache | None = None,
         keys: dict[str, str] | None = None) -> dict[str, str]:
  """{layer: mode} from the maps' sizes, checked before any work.

  Raises:
    ValueError: (one line) cache_positions and maps to write larger than
      max_cache_bytes or than the cache disk's free space.
  """
  target.check_layers(layers)
  modes = {}
  for layer in layers:
    size = target.map_bytes(layer)
    mode = ("cached" if cache_positions else
            "memory" if size <= memory_bytes else "stream")
    modes[layer] = mode
    logging.info("features: %s per-position maps %d x %s float32 = %s: %s",
                 layer, len(target), "x".join(map(str, target.shapes[layer])),
                 human_bytes(size), mode)
  if cache_positions:
    todo = [l for l in layers if not (cache and keys and
                                      cache.has(keys[l]))]
    need = sum(target.map_bytes(l) for l in todo)
    sizes = ", ".join(f"{l} {human_bytes(target.map_bytes(l))}"
                      for l in todo)[:100]
    if need > max_cache_bytes:
      raise ValueError(
          f"cache_positions: the per-position maps ({sizes}) need "
          f"{human_bytes(need)}, more than max_cache_gb="
          f"{max_cache_bytes / 2**30:.3g}; raise it, choose fewer --layers, "
          "or train without cache_positions")
    if cache is not None and need:
      free = shutil.disk_usage(cache.root).free
      if need > free:
        raise ValueError(
            f"cache_positions: the per-position maps ({sizes}) need "
            f"{human_bytes(need)} but {cache.root[:80]} has "
            f"{human_bytes(free)} free; free space, choose fewer --layers, "
            "or train without cache_positions")
  return modes


def layer_maps(target: RunTarget, modes: dict[str, str],
               cache: cache_lib.ArrayCache | None = None,
               keys: dict[str, str] | None = None) -> dict[str, LayerMaps]:
  """The LayerMaps of every layer of `modes` (cached ones computed or read
  in one pass of the target for all of them, with resume)."""
  out = {}
  cached = [l for l, m in modes.items() if m == "cached"]
  if cached:
    per_image = sum(target.map_bytes(l) for l in cached) // max(
        1, len(target))
    shard_rows = max(1, SHARD_BYTES // max(1, per_image))

    def compute(ranges, names):
      return shard_grid.rows_by_range(target.batches(names, ranges), ranges)

    arrays = cache.rows({l: keys[l] for l in cached},
                        "per-position activations", len(target), shard_rows,
                        compute,
                        {l: {"layer": l, **target.identity} for l in cached})
    for l in cached:
      out[l] = LayerMaps(l, target.shapes[l], len(target), "cached",
                         arrays[l], keys[l], {"layer": l, **target.identity},
                         target)
  for l, mode in modes.items():
    if mode != "cached":  # In memory: read by `load` when it is used.
      out[l] = LayerMaps(l, target.shapes[l], len(target), mode, None, "",
                         {"layer": l, **target.identity}, target)
  return out

