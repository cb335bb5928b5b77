"""Image loading and eval-time preprocessing, without torch.

Both target models (torchvision's ImageNet eval transform) and CLIP
(CLIPImageProcessor) resize the short side with PIL, center crop and
normalize; Hugging Face's ViTImageProcessor resizes straight to a square
(the aspect ratio is not kept). `ImageTransform` describes one such
pipeline and turns a PIL image into a float32 (crop, crop, 3) NHWC-ready
array.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Literal

import numpy as np
from PIL import Image

# torchvision/torchvision.transforms and HF use these PIL filters by name.
RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# ViTImageProcessor's defaults (IMAGENET_STANDARD_MEAN/STD), which
# google/vit-base-patch16-224's preprocessor_config.json also gives.
VIT_MEAN = (0.5, 0.5, 0.5)
VIT_STD = (0.5, 0.5, 0.5)
RESIZE_MODES = ("short_side", "square")


class ImageReadError(ValueError):
  """An image file could not be opened or decoded."""


def load_rgb(path: str | os.PathLike) -> Image.Image:
  """Opens an image file and converts it to 3-channel RGB.

  Grayscale, palette, CMYK and RGBA images are converted (alpha is dropped).

  Args:
    path: image file path.

  Returns:
    A fully decoded PIL image in mode "RGB".

  Raises:
    ImageReadError: naming the file, if it cannot be read or decoded.
  """
  try:
    with Image.open(path) as img:
      img.load()
      return img.convert("RGB")
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ImageReadError(f"cannot read image file {os.fspath(path)!r}: {e}") from e


def to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
  """Returns `image` as an RGB PIL image (uint8 HWC / HW arrays accepted)."""
  if isinstance(image, Image.Image):
    return image if image.mode == "RGB" else image.convert("RGB")
  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    raise ValueError(f"image arrays must be uint8, got {arr.dtype}")
  if arr.ndim == 3 and arr.shape[-1] == 1:
    arr = arr[..., 0]
  if arr.ndim == 2:
    return Image.fromarray(arr, mode="L").convert("RGB")
  if arr.ndim == 3 and arr.shape[-1] in (3, 4):
    return Image.fromarray(arr).convert("RGB")
  raise ValueError(
      f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); "
      f"got shape {arr.shape}")


def resize_short_side(image: Image.Image, size: int,
                      resample: str = "bilinear") -> Image.Image:
  """Resizes so the short side is `size`, keeping the aspect ratio.

  The long side is int(size * long / short), as torchvision and
  transformers compute it. PIL's resize antialiases when downscaling.
  """
  w, h = image.size
  short, long = (w, h) if w <= h else (h, w)
  new_short, new_long = size, int(size * long / short)
  new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
  if (new_w, new_h) == (w, h):
    return image
  return image.resize((new_w, new_h), RESAMPLE[resample])


def center_crop(array: np.ndarray, size: int,
                rounding: Literal["round", "floor"] = "round") -> np.ndarray:
  """Crops the central (size, size) window of an (H, W, C) array.

  rounding="round" places the window as torchvision does
  (int(round((H - size) / 2))); "floor" as transformers does ((H - size) // 2).
  """
  h, w = array.shape[:2]
  if h < size or w < size:  # Pad like torchvision/transformers, with zeros.
    ph, pw = max(size - h, 0), max(size - w, 0)
    array = np.pad(array, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2),
                           (0, 0)))
    h, w = array.shape[:2]
  if rounding == "round":
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  else:
    top, left = (h - size) // 2, (w - size) // 2
  return array[top:top + size, left:left + size]


@dataclasses.dataclass(frozen=True)
class ImageTransform:
  """Resize -> center crop -> scale to [0, 1] -> normalize.

  Attributes:
    resize: target short side in pixels ("short_side"), or side of the
      square the image is resized to ("square").
    crop: side of the square center crop.
    resample: PIL filter name, one of RESAMPLE.
    mean: per-channel mean (RGB) subtracted after scaling to [0, 1].
    std: per-channel std (RGB) divided after subtracting the mean.
    crop_rounding: "round" (torchvision) or "floor" (transformers).
    resize_mode: "short_side" keeps the aspect ratio (torchvision, CLIP);
      "square" resizes to (resize, resize) whatever the aspect ratio, as
      ViTImageProcessor does.
  """
  resize: int = 256
  crop: int = 224
  resample: str = "bilinear"
  mean: tuple[float, float, float] = IMAGENET_MEAN
  std: tuple[float, float, float] = IMAGENET_STD
  crop_rounding: Literal["round", "floor"] = "round"
  resize_mode: Literal["short_side", "square"] = "short_side"

  def __post_init__(self):
    if self.resample not in RESAMPLE:
      raise ValueError(f"resample={self.resample!r}; allowed: {sorted(RESAMPLE)}")
    if self.resize_mode not in RESIZE_MODES:
      raise ValueError(f"resize_mode={self.resize_mode!r}; allowed: "
                       f"{list(RESIZE_MODES)}")
    if self.crop > self.resize:
      raise ValueError(f"crop={self.crop} is larger than resize={self.resize}")

  def __call__(self, image: Image.Image | np.ndarray) -> np.ndarray:
    """Returns the preprocessed image, float32 of shape (crop, crop, 3)."""
    img = to_rgb(image)
    if self.resize_mode == "square":
      if img.size != (self.resize, self.resize):
        img = img.resize((self.resize, self.resize), RESAMPLE[self.resample])
    else:
      img = resize_short_side(img, self.resize, self.resample)
    arr = center_crop(np.asarray(img), self.crop, self.crop_rounding)
    arr = arr.astype(np.float32) / 255.0
    return (arr - np.asarray(self.mean, np.float32)) / np.asarray(
        self.std, np.float32)

  def identity(self) -> str:
    """A string that determines the transform's output (for cache keys).

    Transforms with the default resize_mode keep the identity they had
    before the field existed, so existing caches stay valid.
    """
    fields = dataclasses.astuple(self)
    if self.resize_mode == "short_side":
      fields = fields[:-1]
    return repr(fields)


# torchvision's ImageNet eval transform: Resize(256) bilinear antialias,
# CenterCrop(224), Normalize(ImageNet mean/std).
TORCHVISION_IMAGENET_EVAL = ImageTransform()
# CLIPImageProcessor: shortest_edge 224 bicubic, center crop 224, CLIP mean/std.
CLIP_EVAL = ImageTransform(resize=224, crop=224, resample="bicubic",
                           mean=CLIP_MEAN, std=CLIP_STD, crop_rounding="floor")
# ViTImageProcessor as google/vit-base-patch16-224 configures it: resize to
# 224x224 bilinear (PIL, antialiased), no crop, mean/std 0.5.
VIT_EVAL = ImageTransform(resize=224, crop=224, resample="bilinear",
                          mean=VIT_MEAN, std=VIT_STD, resize_mode="square")
# CIFAR-100 models: 32x32 inputs (CIFAR images pass through unchanged),
# CIFAR-100 mean/std.
CIFAR100_EVAL = ImageTransform(resize=32, crop=32, resample="bilinear",
                               mean=CIFAR100_MEAN, std=CIFAR100_STD)
