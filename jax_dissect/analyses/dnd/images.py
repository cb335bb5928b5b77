"""Images as DnD passes them around: loading, fingerprints, squares, crops.

A probe image is a file path, a PIL image, a uint8 (H, W[, 3]) array or a
`ProbeImage` (an image of a jax_dissect.data probe set, e.g. a TFDS
record); DnD turns each into an RGB PIL image. Fingerprints identify an
image's content for cache keys: a path by its absolute name, size and mtime
(as the describe_neurons cache does), a ProbeImage by its set's fingerprint
and its id, pixels by a hash of their bytes.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from jax_dissect.analyses.dnd import regions
from jax_dissect.data import preprocess
from jax_dissect.store import integrity


@dataclasses.dataclass(frozen=True)
class ProbeImage:
  """Image `index` of a probe set (jax_dissect.data.ProbeSet), read lazily.

  Attributes:
    probe: the probe set.
    index: the image's position in it.
    fingerprint: a content id for cache keys.
  """
  probe: Any
  index: int
  fingerprint: str

  def load(self) -> Image.Image:
    return self.probe.load(self.index)


def probe_images(probe: Any) -> list[Any]:
  """The images of a jax_dissect.data.ProbeSet, in order, as DnD takes them.

  File paths where the set reads files (image folders), else `ProbeImage`s
  fingerprinted by the set's fingerprint and the image's id.
  """
  paths = [probe.path(i) for i in range(len(probe))]
  if all(paths):
    return paths
  set_id = probe.fingerprint()
  ids = probe.ids
  return [p or ProbeImage(probe, i, integrity.fingerprint(set_id, ids[i])[:24])
          for i, p in enumerate(paths)]


def load(image: Any) -> Image.Image:
  """An RGB PIL image from a path, PIL image, uint8 array or ProbeImage."""
  if isinstance(image, ProbeImage):
    return image.load()
  if isinstance(image, (str, os.PathLike)):
    return preprocess.load_rgb(image)
  if isinstance(image, (Image.Image, np.ndarray)):
    return preprocess.to_rgb(image)
  raise ValueError(f"images must be file paths, PIL images, uint8 arrays or "
                   f"ProbeImages; got {type(image).__name__}")


class LazyImages(Sequence):
  """A sequence whose items are made on access: fn(items[i]).

  Lets a probe set of file paths (or crops described by boxes) go through
  batched model passes with only one batch of pixels in memory.
  """

  def __init__(self, items: Sequence[Any], fn: Callable[[Any], Any] = None):
    self.items, self.fn = items, fn or load

  def __len__(self) -> int:
    return len(self.items)

  def __getitem__(self, index):
    if isinstance(index, slice):
      return [self.fn(x) for x in self.items[index]]
    return self.fn(self.items[index])


def fingerprint(image: Any) -> str:
  """A short content id of one image (see the module docstring)."""
  if isinstance(image, ProbeImage):
    return image.fingerprint
  if isinstance(image, (str, os.PathLike)):
    path = os.path.abspath(os.fspath(image))
    try:
      st = os.stat(path)
    except OSError as e:
      raise preprocess.ImageReadError(f"cannot read image file {path!r}: "
                                      f"{e}") from e
    return integrity.fingerprint("file", path, st.st_size,
                                 st.st_mtime_ns)[:24]
  return integrity.array_fingerprint(np.asarray(load(image)))[:24]


def fingerprints(images: Sequence[Any]) -> list[str]:
  return [fingerprint(im) for im in images]


def square(image: Image.Image, size: int) -> Image.Image:
  """`image` resized to (size, size), bicubic (aspect ratio not kept)."""
  if image.size == (size, size):
    return image
  return image.resize((size, size), Image.Resampling.BICUBIC)


def crop(image: Image.Image, box: regions.Box | None) -> Image.Image:
  """The box of `image` resized back to the image's size (None: image)."""
  if box is None:
    return image
  return image.crop(tuple(box)).resize(image.size,
                                       Image.Resampling.BICUBIC)


def to_uint8(images: Any, what: str) -> np.ndarray:
  """A stack of RGB images as (n, H, W, 3) uint8.

  Accepts a list of PIL images or arrays, or one array; float arrays are
  taken as [0, 1] and rounded.

  Raises:
    ValueError: naming `what` and the shape, if they are not RGB images of
      one size.
  """
  if isinstance(images, (list, tuple)):
    try:
      images = np.stack([np.asarray(load(im) if isinstance(im, Image.Image)
                                    else im) for im in images])
    except ValueError as e:
      raise ValueError(f"{what} returned images of different sizes: {e}"
                       ) from e
  arr = np.asarray(images)
  if arr.ndim != 4 or arr.shape[-1] != 3:
    raise ValueError(f"{what} returned an array of shape {arr.shape}; "
                     "expected (n, H, W, 3) RGB images")
  if arr.dtype != np.uint8:
    if not np.issubdtype(arr.dtype, np.floating):
      raise ValueError(f"{what} returned {arr.dtype} images; expected uint8 "
                       "or float in [0, 1]")
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"{what} returned images holding NaN or inf")
    arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
  return arr


def to_pil(array: np.ndarray) -> list[Image.Image]:
  """(n, H, W, 3) uint8 -> n PIL images."""
  return [Image.fromarray(np.asarray(a)) for a in array]
