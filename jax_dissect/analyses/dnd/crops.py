"""Stage 1: each neuron's most activating images and attention crops.

For every chosen neuron of a layer:

1. its `num_images` most activating probe images (by the pooled probe
   activations), each resized to `image_size` x `image_size`;
2. conv layers only: the neuron's spatial map on each of them is laid
   over the image (upsampled to the part of the image the model saw, see
   `Target.input_region`), Otsu-thresholded, and the bounding boxes of its
   regions give up to `num_crops` crops per image (`regions.attention_boxes`);
   each crop is resized back to `image_size`;
3. the target is run on the images and crops; the `num_images` most
   activating of them (for this neuron) go on to captioning.

Token layers (B, T, C) and vector layers (B, C) have no spatial map: their
neurons keep their `num_images` whole images (no crops), as the original
does for fc layers.

All neurons of one call share target passes: the maps of the union of
their top images come from one batched pass, and the activations of all
their images and crops from another (every neuron's activation is read off
the same rows). Results are saved per neuron as JSON (the boxes, not the
pixels: crops are rebuilt from the probe images with `render`), keyed by
the target, layer, unit, the top images' fingerprints and the settings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
from PIL import Image

from jax_dissect.analyses.dnd import config as config_lib
from jax_dissect.analyses.dnd import images as images_lib
from jax_dissect.analyses.dnd import regions
from jax_dissect.analyses.dnd import store as store_lib
from jax_dissect.analyses.dnd import target as target_lib


@dataclasses.dataclass(frozen=True)
class NeuronCrops:
  """One neuron's images and crops.

  Attributes:
    unit: the neuron's index in its layer.
    sources: probe index of each entry (an image or a crop of it).
    boxes: each entry's crop box (x0, y0, x1, y1) in the resized image, or
      None for the whole image.
    activations: the neuron's pooled activation on each entry.
    top: indices of the entries that go on, most activating first.
  """
  unit: int
  sources: tuple[int, ...]
  boxes: tuple[regions.Box | None, ...]
  activations: tuple[float, ...]
  top: tuple[int, ...]

  def to_json(self) -> dict[str, Any]:
    return {"unit": self.unit, "sources": list(self.sources),
            "boxes": [None if b is None else list(b) for b in self.boxes],
            "activations": list(self.activations), "top": list(self.top)}

  @classmethod
  def from_json(cls, value: dict[str, Any]) -> "NeuronCrops":
    return cls(int(value["unit"]), tuple(value["sources"]),
               tuple(None if b is None else tuple(b) for b in value["boxes"]),
               tuple(value["activations"]), tuple(value["top"]))

  def num_crops(self) -> int:
    return sum(b is not None for b in self.boxes)


def top_probe_images(probe_activations: np.ndarray, units: Sequence[int],
                     num_images: int) -> dict[int, list[int]]:
  """{unit: probe indices of its `num_images` largest activations}.

  Ties keep the lower index first.
  """
  num_images = min(num_images, probe_activations.shape[0])
  out = {}
  for unit in units:
    order = np.argsort(-probe_activations[:, unit], kind="stable")
    out[int(unit)] = [int(i) for i in order[:num_images]]
  return out


def render(probe_images: Sequence[Any], source: int,
           box: regions.Box | None, image_size: int,
           loaded: dict[int, Image.Image] | None = None) -> Image.Image:
  """The pixels of one entry: a probe image squared, cropped by `box`."""
  if loaded is not None and source in loaded:
    image = loaded[source]
  else:
    image = images_lib.square(images_lib.load(probe_images[source]),
                              image_size)
    if loaded is not None:
      loaded[source] = image
  return images_lib.crop(image, box)


def top_images(crops: NeuronCrops, probe_images: Sequence[Any],
               image_size: int,
               loaded: dict[int, Image.Image] | None = None
               ) -> list[Image.Image]:
  """The neuron's entries that go on (most activating first), as pixels."""
  return [render(probe_images, crops.sources[i], crops.boxes[i], image_size,
                 loaded) for i in crops.top]


def _crop_key(store: store_lib.Store, target: target_lib.Target, layer: str,
              unit: int, fingerprints: list[str],
              config: config_lib.DnDConfig) -> str:
  return store.key("crops", target=target.identity, layer=layer, unit=unit,
                   images=fingerprints, num_images=config.num_images,
                   num_crops=config.num_crops, image_size=config.image_size,
                   overlap=config.max_crop_overlap,
                   full_iou=config.max_full_image_iou)


def _compute(target: target_lib.Target, probe_images: Sequence[Any],
             layer: str, tops: dict[int, list[int]],
             config: config_lib.DnDConfig) -> dict[int, NeuronCrops]:
  """Crops of the neurons in `tops`, with two batched target passes."""
  units = list(tops)
  loaded: dict[int, Image.Image] = {}
  union = sorted({i for ids in tops.values() for i in ids})
  squares = [render(probe_images, i, None, config.image_size, loaded)
             for i in union]
  row_of = {i: r for r, i in enumerate(union)}
  size = (config.image_size, config.image_size)
  maps = None
  if config.num_crops > 0:
    maps = target.maps(squares, layer, units)  # (n, h, w, U) or None.
  region = target.input_region(size)
  entries = {u: [(i, None) for i in tops[u]] for u in units}
  if maps is not None:
    for col, unit in enumerate(units):
      for i in tops[unit]:
        boxes = regions.attention_boxes(
            maps[row_of[i], :, :, col], size, region, config.num_crops,
            config.max_crop_overlap, config.max_full_image_iou)
        entries[unit].extend((i, b) for b in boxes)
  # One pass for all whole images (shared) and every neuron's crops.
  crop_items = [(u, i, b) for u in units for i, b in entries[u]
                if b is not None]
  # Crops are cut batch by batch, never all held at once.
  pixels = images_lib.LazyImages(
      [(i, None) for i in union] + [(i, b) for _, i, b in crop_items],
      lambda item: render(probe_images, item[0], item[1], config.image_size,
                          loaded))
  acts = target.pooled(pixels, layer)
  crop_row = {(u, i, b): len(squares) + r
              for r, (u, i, b) in enumerate(crop_items)}
  out = {}
  for unit in units:
    rows = [row_of[i] if b is None else crop_row[(unit, i, b)]
            for i, b in entries[unit]]
    values = acts[rows, unit].astype(np.float64)
    order = np.argsort(-values, kind="stable")[:config.num_images]
    out[unit] = NeuronCrops(
        unit, tuple(i for i, _ in entries[unit]),
        tuple(b for _, b in entries[unit]),
        tuple(float(v) for v in values), tuple(int(k) for k in order))
  return out


def attention_crops(target: target_lib.Target, probe_images: Sequence[Any],
                    layer: str, units: Sequence[int],
                    probe_activations: np.ndarray,
                    config: config_lib.DnDConfig, store: store_lib.Store
                    ) -> dict[int, NeuronCrops]:
  """Stage 1 for `units` of `layer` (see the module docstring).

  Args:
    target: the network.
    probe_images: the N probe images (paths, PIL images or uint8 arrays).
    layer: the layer's dotted path.
    units: neuron indices.
    probe_activations: (N, K) pooled activations of the layer on the probe
      images (picks each neuron's top images).
    config: settings (num_images, num_crops, image_size, overlaps).
    store: where results are kept; computed in chunks of
      `config.unit_chunk` neurons, each saved as soon as it is done.

  Returns:
    {unit: NeuronCrops}.
  """
  tops = top_probe_images(probe_activations, units, config.num_images)
  prints: dict[int, str] = {}
  out, pending = {}, {}
  for unit in units:
    for i in tops[unit]:
      if i not in prints:
        prints[i] = images_lib.fingerprint(probe_images[i])
    key = _crop_key(store, target, layer, unit, [prints[i] for i in
                                                 tops[unit]], config)
    value = store.get_json(key)
    if value is not None:
      out[unit] = NeuronCrops.from_json(value)
    else:
      pending[unit] = key
  todo = list(pending)
  for start in range(0, len(todo), config.unit_chunk):
    chunk = todo[start:start + config.unit_chunk]
    done = _compute(target, probe_images, layer, {u: tops[u] for u in chunk},
                    config)
    for unit in chunk:
      store.put_json(pending[unit], done[unit].to_json())
      out[unit] = done[unit]
  return out
