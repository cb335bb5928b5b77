"""Regions of a neuron's activation map: Otsu threshold, boxes, IoU.

Pure numpy (and scipy.ndimage for connected components). A map is a 2-D
float array over an image; `heatmap_uint8` scales it to 0..255 as the
image-processing convention Otsu's method assumes, `otsu_threshold` picks
the threshold that maximizes the between-class variance of the 256-bin
histogram, `region_boxes` gives the bounding boxes of the 8-connected
regions above it, and `select_boxes` keeps the largest boxes that do not
overlap each other much and are not almost the whole image.

Boxes are (x0, y0, x1, y1) in pixels with exclusive ends, as PIL's crop.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

Box = tuple[int, int, int, int]


def heatmap_uint8(values: np.ndarray) -> np.ndarray:
  """Scales a 2-D map linearly to uint8 0..255 (min -> 0, max -> 255).

  A constant map becomes all zeros (no region stands out).
  """
  values = np.asarray(values, np.float64)
  if values.ndim != 2:
    raise ValueError(f"an activation map must be 2-D (H, W); got shape "
                     f"{values.shape}")
  low, high = float(np.min(values)), float(np.max(values))
  if not np.isfinite(low) or not np.isfinite(high):
    raise ValueError("the activation map holds NaN or inf")
  if high <= low:
    return np.zeros(values.shape, np.uint8)
  return np.round((values - low) / (high - low) * 255.0).astype(np.uint8)


def otsu_threshold(gray: np.ndarray) -> int:
  """Otsu's threshold of a uint8 image: foreground is `gray > threshold`.

  For every t in 0..255 the pixels split into {<= t} and {> t}; the chosen t
  maximizes w0 * w1 * (mu0 - mu1)^2 (w: class fractions, mu: class means),
  the first maximum when several t tie.

  Args:
    gray: uint8 array of any shape.

  Returns:
    The threshold t (0..255); a single-valued image gives its value.
  """
  gray = np.asarray(gray)
  if gray.dtype != np.uint8:
    raise ValueError(f"otsu_threshold needs a uint8 image; got {gray.dtype}")
  hist = np.bincount(gray.ravel(), minlength=256).astype(np.float64)
  total = hist.sum()
  if total == 0:
    return 0
  levels = np.arange(256, dtype=np.float64)
  w0 = np.cumsum(hist) / total              # Fraction at or below t.
  m0 = np.cumsum(hist * levels) / total     # Their mass times their mean.
  mean = m0[-1]
  w1 = 1.0 - w0
  with np.errstate(divide="ignore", invalid="ignore"):
    # w0 * w1 * (mu0 - mu1)^2 == (mean * w0 - m0)^2 / (w0 * w1).
    between = (mean * w0 - m0) ** 2 / (w0 * w1)
  between[~np.isfinite(between)] = -1.0
  if between.max() <= 0:  # One gray level only.
    return int(gray.ravel()[0])
  return int(np.argmax(between))


def region_boxes(mask: np.ndarray) -> list[Box]:
  """Bounding boxes of the 8-connected regions of a boolean mask.

  Returns:
    [(x0, y0, x1, y1)] with exclusive ends, in scan order of the regions.
  """
  labels, _ = ndimage.label(np.asarray(mask, bool),
                            structure=np.ones((3, 3), bool))
  boxes = []
  for rows, cols in ndimage.find_objects(labels):
    boxes.append((int(cols.start), int(rows.start), int(cols.stop),
                  int(rows.stop)))
  return boxes


def box_area(box: Box) -> int:
  x0, y0, x1, y1 = box
  return max(0, x1 - x0) * max(0, y1 - y0)


def iou(a: Box, b: Box) -> float:
  """Intersection over union of two boxes (0 when both are empty)."""
  inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]),
                    min(a[3], b[3])))
  union = box_area(a) + box_area(b) - inter
  return inter / union if union > 0 else 0.0


def select_boxes(boxes: Sequence[Box], image_size: tuple[int, int],
                 max_boxes: int, max_overlap: float = 0.5,
                 max_full_image_iou: float = 0.8) -> list[Box]:
  """The largest boxes that make useful crops, at most `max_boxes`.

  Boxes are visited largest first (ties keep their order); one is kept if
  its IoU with every kept box is <= max_overlap and its IoU with the whole
  image is < max_full_image_iou (a crop of almost the whole image adds
  nothing to the image itself).

  Args:
    boxes: candidate boxes.
    image_size: (width, height) of the image.
    max_boxes: most boxes returned.
    max_overlap: largest IoU allowed between two kept boxes.
    max_full_image_iou: kept boxes have a smaller IoU with the image.

  Returns:
    The kept boxes, largest first.
  """
  full = (0, 0, int(image_size[0]), int(image_size[1]))
  kept: list[Box] = []
  for box in sorted(boxes, key=box_area, reverse=True):
    if len(kept) >= max_boxes:
      break
    if box_area(box) == 0 or iou(box, full) >= max_full_image_iou:
      continue
    if all(iou(box, other) <= max_overlap for other in kept):
      kept.append(box)
  return kept


def upsample_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """Bilinear resize of a 2-D float map to (width, height) `size`."""
  values = np.asarray(values, np.float32)
  if values.shape[::-1] == tuple(size):
    return values
  image = Image.fromarray(values, mode="F")
  return np.asarray(image.resize(tuple(size), Image.Resampling.BILINEAR),
                    np.float32)


def map_on_image(values: np.ndarray, image_size: tuple[int, int],
                 region: Box | None = None) -> np.ndarray:
  """A neuron's map laid over an image of (width, height) `image_size`.

  The map covers `region` of the image (the part the target model saw, e.g.
  its center crop; None: the whole image): it is upsampled bilinearly to the
  region and the rest of the image gets the map's minimum.

  Returns:
    (height, width) float32.
  """
  width, height = image_size
  x0, y0, x1, y1 = region or (0, 0, width, height)
  values = np.asarray(values, np.float32)
  out = np.full((height, width), np.min(values), np.float32)
  out[y0:y1, x0:x1] = upsample_map(values, (x1 - x0, y1 - y0))
  return out


def attention_boxes(values: np.ndarray, image_size: tuple[int, int],
                    region: Box | None, max_boxes: int,
                    max_overlap: float = 0.5,
                    max_full_image_iou: float = 0.8) -> list[Box]:
  """Crop boxes of one activation map: upsample, Otsu, regions, select.

  Args:
    values: (h, w) activation map of one neuron on one image.
    image_size: (width, height) of the image the boxes are for.
    region: the image part the map covers (see `map_on_image`).
    max_boxes, max_overlap, max_full_image_iou: as `select_boxes`.

  Returns:
    Up to `max_boxes` boxes, largest first; none for a constant map.
  """
  gray = heatmap_uint8(map_on_image(values, image_size, region))
  if not gray.any():
    return []
  mask = gray > otsu_threshold(gray)
  return select_boxes(region_boxes(mask), image_size, max_boxes, max_overlap,
                      max_full_image_iou)
