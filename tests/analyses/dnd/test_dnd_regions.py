"""Otsu thresholds, region boxes and attention crops (analyses/dnd/regions)."""

import numpy as np
import pytest

from jax_dissect.analyses.dnd import regions


def test_otsu_two_levels_splits_between_them():
  gray = np.array([[10] * 6 + [200] * 4] * 3, np.uint8)
  t = regions.otsu_threshold(gray)
  assert 10 <= t < 200
  assert ((gray > t) == (gray == 200)).all()


def test_otsu_matches_brute_force_between_class_variance():
  rng = np.random.default_rng(0)
  gray = np.concatenate([rng.normal(60, 15, 500), rng.normal(170, 25, 300)])
  gray = np.clip(gray, 0, 255).astype(np.uint8)
  best_t, best = None, -1.0
  for t in range(256):
    lo, hi = gray[gray <= t].astype(float), gray[gray > t].astype(float)
    if not lo.size or not hi.size:
      continue
    w0, w1 = lo.size / gray.size, hi.size / gray.size
    between = w0 * w1 * (lo.mean() - hi.mean()) ** 2
    if between > best + 1e-9:
      best_t, best = t, between
  assert regions.otsu_threshold(gray) == best_t


def test_otsu_constant_image():
  assert regions.otsu_threshold(np.full((4, 4), 7, np.uint8)) == 7
  with pytest.raises(ValueError, match="uint8"):
    regions.otsu_threshold(np.zeros((2, 2), np.float32))


def test_planted_square_gives_its_box():
  # A 12x12 map with a bright 3x4 block at rows 2..4, cols 6..9, laid over
  # a 120x120 image: the box is the block scaled by 10.
  values = np.random.default_rng(0).uniform(0, 0.1, (12, 12))
  values[2:5, 6:10] = 1.0
  boxes = regions.attention_boxes(values, (120, 120), None, max_boxes=4)
  assert len(boxes) == 1
  x0, y0, x1, y1 = boxes[0]
  # Bilinear upsampling blurs the edge by at most one source pixel.
  assert abs(x0 - 60) <= 10 and abs(x1 - 100) <= 10
  assert abs(y0 - 20) <= 10 and abs(y1 - 50) <= 10


def test_planted_square_exact_at_native_size():
  values = np.zeros((50, 40))
  values[10:20, 5:25] = 3.0
  assert regions.attention_boxes(values, (40, 50), None, 4) == [(5, 10, 25,
                                                                 20)]


def test_region_boxes_two_blobs_and_diagonal_connectivity():
  mask = np.zeros((10, 10), bool)
  mask[1:3, 1:3] = True
  mask[3, 3] = True  # Touches the first blob diagonally: same region.
  mask[6:9, 5:10] = True
  assert regions.region_boxes(mask) == [(1, 1, 4, 4), (5, 6, 10, 9)]


def test_select_boxes_largest_first_no_overlap_not_whole_image():
  boxes = [(0, 0, 10, 10), (0, 0, 100, 100), (1, 1, 10, 10),
           (50, 50, 80, 80), (60, 0, 70, 5)]
  kept = regions.select_boxes(boxes, (100, 100), max_boxes=4)
  # The whole image is dropped; (1, 1, 10, 10) overlaps (0, 0, 10, 10).
  assert kept == [(50, 50, 80, 80), (0, 0, 10, 10), (60, 0, 70, 5)]
  assert regions.select_boxes(boxes, (100, 100), max_boxes=1) == [
      (50, 50, 80, 80)]


def test_iou():
  assert regions.iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
  assert regions.iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_map_on_image_region():
  values = np.ones((2, 2))
  values[0, 0] = 5.0
  out = regions.map_on_image(values, (10, 8), (2, 2, 6, 6))
  assert out.shape == (8, 10)
  assert out[0, 0] == 1.0 and out[7, 9] == 1.0  # Outside: the minimum.
  assert out[2, 2] == pytest.approx(5.0)


def test_constant_map_has_no_crops():
  assert regions.attention_boxes(np.ones((5, 5)), (50, 50), None, 4) == []
  with pytest.raises(ValueError, match="NaN"):
    regions.attention_boxes(np.full((2, 2), np.nan), (4, 4), None, 4)
