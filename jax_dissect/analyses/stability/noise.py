"""Labels under pixel noise: do they survive a small corruption of the probe?

"Corrupting Neuron Explanations" (Srivastava et al., 2024) adds Gaussian
noise of std 0.02 to the probe images and finds up to 28% of deep-layer
labels change. Here the noise is added in [0, 1] pixel space: after each
model's resize and center crop, before its mean/std normalisation, and the
noisy pixels are clipped to [0, 1]:

  x_noisy = normalize(clip(x01 + std * eps, 0, 1)),  eps ~ N(0, 1)

with eps drawn per image from numpy's default_rng((seed, image index)), so
the noise does not depend on the batch size. The target model and CLIP
each see the noisy image (each at its own input size, so two independent
noise fields of the same std); then A, P and the labels are recomputed.
The analysis is jax_dissect.analyses.stability (option noise_std).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from jax_dissect.data import preprocess

# The noise std of "Corrupting Neuron Explanations".
DEFAULT_NOISE_STD = 0.02


def add_pixel_noise(pixels: np.ndarray, transform: preprocess.ImageTransform,
                    std: float, indices: Sequence[int], seed: int = 0
                    ) -> np.ndarray:
  """Gaussian noise in [0, 1] pixel space on normalised model inputs.

  Args:
    pixels: float32 (B, S, S, 3) images already through `transform`.
    transform: the transform that made them (its mean and std undo the
      normalisation).
    std: the noise's std in [0, 1] pixel units (>= 0; 0 returns pixels).
    indices: (B,) the images' probe indices (seed the per-image noise).
    seed: the noise seed.

  Returns:
    float32 (B, S, S, 3) noisy images, normalised as `transform` does.
  """
  pixels = np.asarray(pixels, np.float32)
  if len(indices) != pixels.shape[0]:
    raise ValueError(f"{len(indices)} indices for {pixels.shape[0]} images")
  if std == 0:
    return pixels
  mean = np.asarray(transform.mean, np.float32)
  scale = np.asarray(transform.std, np.float32)
  eps = np.stack([np.random.default_rng((seed, int(i))).standard_normal(
      pixels.shape[1:], np.float32) for i in indices])
  x01 = np.clip(pixels * scale + mean + np.float32(std) * eps, 0.0, 1.0)
  return ((x01 - mean) / scale).astype(np.float32)


def noisy_batches(load: Callable[[int], Any], num_images: int,
                  transform: preprocess.ImageTransform, std: float, *,
                  seed: int = 0, batch_size: int = 64
                  ) -> Iterator[np.ndarray]:
  """(B, S, S, 3) noisy model inputs of images 0..num_images-1, in order.

  Args:
    load: image index -> image (PIL or array), e.g. a ProbeSet's load.
    num_images: N.
    transform: the model's preprocessing.
    std, seed: the noise (see add_pixel_noise).
    batch_size: images per batch.
  """
  for start in range(0, num_images, batch_size):
    idx = range(start, min(start + batch_size, num_images))
    batch = np.stack([transform(load(i)) for i in idx])
    yield add_pixel_noise(batch, transform, std, idx, seed)


def labels_kept(clean: Any, noisy: Any) -> np.ndarray:
  """bool (K,): the label under noise equals the clean label."""
  clean, noisy = np.asarray(clean), np.asarray(noisy)
  if clean.shape != noisy.shape:
    raise ValueError(f"label shapes differ: {clean.shape} vs {noisy.shape}")
  return clean == noisy
