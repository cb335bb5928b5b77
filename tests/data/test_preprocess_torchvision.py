"""TORCHVISION_IMAGENET_EVAL vs torchvision's transform; image file errors."""

import os

import numpy as np
from PIL import Image
import pytest

from configs import shared_data
from jax_dissect.data import preprocess

SAMPLE_DIR = shared_data.path("imagenet_sample")


def _sample_photos(count):
  names = sorted(os.listdir(SAMPLE_DIR))
  return [os.path.join(SAMPLE_DIR, n) for n in names[::len(names) // count]
          ][:count]


def test_matches_torchvision_on_real_photos():
  torch = pytest.importorskip("torch", reason="torch extra not installed")
  del torch
  transforms = pytest.importorskip("torchvision.transforms",
                                   reason="torchvision not installed")
  reference = transforms.Compose([
      transforms.Resize(256), transforms.CenterCrop(224),
      transforms.ToTensor(),
      transforms.Normalize(preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)])
  std = np.asarray(preprocess.IMAGENET_STD, np.float32)
  paths = _sample_photos(20)
  assert len(paths) == 20
  for path in paths:
    image = preprocess.load_rgb(path)
    # Also a non-square, non-256 size, so the resize itself is exercised.
    for img in (image, image.resize((300, 411))):
      got = preprocess.TORCHVISION_IMAGENET_EVAL(img)
      want = reference(img).numpy().transpose(1, 2, 0)
      assert got.shape == want.shape == (224, 224, 3)
      assert got.dtype == np.float32
      pixel_error = np.abs(got - want) * std  # In [0, 1] pixel units.
      assert pixel_error.max() <= 2 / 255, (path, img.size, pixel_error.max())


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "LA"])
def test_grayscale_and_alpha_images_become_rgb(tmp_path, mode):
  rng = np.random.default_rng(0)
  rgb = Image.fromarray(rng.integers(0, 256, (40, 60, 3), np.uint8))
  image = rgb.convert(mode)
  suffix = ".jpg" if mode in ("L", "CMYK") else ".png"
  path = tmp_path / f"image_{mode}{suffix}"
  image.save(path)
  loaded = preprocess.load_rgb(path)
  assert loaded.mode == "RGB" and loaded.size == (60, 40)
  out = preprocess.ImageTransform(resize=32, crop=32)(loaded)
  assert out.shape == (32, 32, 3)
  if mode == "L":
    arr = np.asarray(loaded)
    np.testing.assert_array_equal(arr[..., 0], arr[..., 1])


def test_arrays_with_one_or_four_channels():
  transform = preprocess.ImageTransform(resize=16, crop=16)
  gray = np.full((20, 20), 128, np.uint8)
  rgba = np.full((20, 20, 4), 128, np.uint8)
  np.testing.assert_allclose(transform(gray), transform(rgba))
  with pytest.raises(ValueError, match="uint8"):
    transform(np.zeros((20, 20, 3), np.float32))


def test_unreadable_file_names_the_file(tmp_path):
  path = tmp_path / "broken_photo.jpg"
  path.write_bytes(b"this is not a jpeg")
  with pytest.raises(preprocess.ImageReadError, match="broken_photo.jpg"):
    preprocess.load_rgb(path)
  with pytest.raises(preprocess.ImageReadError, match="missing.png"):
    preprocess.load_rgb(tmp_path / "missing.png")
