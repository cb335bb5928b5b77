"""What the image/text embedders of P share (CLIP's and SigLIP's).

`Embedder` is the interface describe_neurons and the analyses use for the
model that computes P, whatever its architecture:

  name, compute_dtype, data_parallel, tokenizer, transform, embed_dim,
  image_size, max_length, model_type   (attributes)
  identity()                            the cache key of its embeddings
  preprocess / embed_pixels / embed_images / embed_batches /
  iter_embed_batches                    images -> (N, D) unit rows
  tokenize / embed_texts                texts -> (M, D) unit rows

A subclass (jax_dissect.clip.embedder.ClipEmbedder,
jax_dissect.clip.siglip.embedder.SiglipEmbedder) sets those attributes and
supplies the two jitted towers `_image_fn(params, pixels)` and
`_text_fn(params, *token_arrays)`, `tokenize`, how a batch of token ids is
padded (`_text_batch`) and what else enters its identity
(`_identity_parts`). Image and text batches run data parallel over the
embedder's local devices (jax_dissect.runtime.data_parallel: one batch per
device per call, padded to the batch size, so embeddings are the same bit
for bit on any number of devices).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import json
import os
from typing import Any, Iterable, Iterator, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jax_dissect.data import loader
from jax_dissect.data import preprocess as preprocess_lib
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import precision
from jax_dissect.runtime import progress as progress_lib

_PROGRESS_EVERY_S = 10.0


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows of x in float32 divided by their L2 norms (zero rows stay 0)."""
  x = x.astype(jnp.float32)
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
  """Consecutive lists of `size` items (the last may be shorter)."""
  it = iter(items)
  while chunk := list(itertools.islice(it, size)):
    yield chunk


def fingerprint(params: Any, arch: Mapping[str, Any], tokenizer: Any) -> str:
  """SHA-256 hex digest of parameters, settings and tokenizer.

  Args:
    params: the parameter pytree (device or host arrays); every leaf's
      path, dtype, shape and bytes are hashed in path order.
    arch: settings that change the embeddings beyond the weights
      (JSON-able; hashed with sorted keys).
    tokenizer: its backend tokenizer's JSON (fast tokenizers) or its
      vocabulary.
  """
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_leaves_with_path(params)
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(
      kv[0])):
    arr = np.asarray(jax.device_get(leaf))
    h.update(f"{jax.tree_util.keystr(path)}{arr.dtype}{arr.shape}".encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  h.update(json.dumps(dict(arch), sort_keys=True, default=str).encode())
  backend = getattr(tokenizer, "backend_tokenizer", None)
  h.update((backend.to_str() if backend is not None else
            json.dumps(tokenizer.get_vocab(), sort_keys=True)).encode())
  return h.hexdigest()


class Embedder:
  """Image and text embeddings (L2-normalised float32) of one backbone.

  Attributes:
    name: hub id, local directory or "random-...(seed=...)" it came from.
    model_type: config.json's model_type: "clip", "siglip" or "siglip2".
    kind: what the backbone is called in logs ("CLIP", "SigLIP").
    compute_dtype: "float32", "bfloat16" or "float16" (both towers).
    data_parallel: the data_parallel.DataParallel batches are split over.
    params: the parameter pytree in `compute_dtype`, replicated on every
      device of `data_parallel`.
    tokenizer: the transformers tokenizer.
    transform: image preprocessing, (S, S, 3) float32 out.
    embed_dim: D, the size of both embeddings.
    image_size: S, the side of the square model input in pixels.
    max_length: tokens per text, special tokens included.
  """

  model_type = ""
  kind = "CLIP"

  def _set_devices(self, params: Any, devices: data_parallel.Devices,
                   compute_dtype: str) -> None:
    """Sets compute_dtype, data_parallel and params (cast, replicated)."""
    self.compute_dtype = precision.check(compute_dtype)
    self.data_parallel = data_parallel.DataParallel(devices)
    self.params = self.data_parallel.replicate(precision.cast_floating(
        jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params),
        compute_dtype))
    self._identity = None

  # -- identity -------------------------------------------------------------

  def _identity_parts(self) -> dict[str, Any]:
    """Settings beyond the weights and tokenizer that change embeddings."""
    raise NotImplementedError

  def identity(self) -> str:
    """A cache key: "<name>@<sha256 prefix>" of weights, settings,
    tokenizer, preprocessing and compute dtype, so equal keys mean equal
    embeddings."""
    if self._identity is None:
      digest = fingerprint(self.params, self._identity_parts(),
                           self.tokenizer)
      self._identity = f"{self.name}@{digest[:16]}"
    return self._identity

  # -- images ---------------------------------------------------------------

  def _image_fn(self, params: Any, pixels: jax.Array) -> jax.Array:
    """Jitted: (B, S, S, 3) pixels -> (B, D) unit rows."""
    raise NotImplementedError

  def preprocess(self, image: Any) -> np.ndarray:
    """One image (path, PIL image or uint8 array) -> (S, S, 3) float32."""
    if isinstance(image, (str, os.PathLike)):
      image = preprocess_lib.load_rgb(image)
    elif not isinstance(image, (Image.Image, np.ndarray)):
      raise ValueError(
          f"images must be file paths, PIL images or uint8 arrays; got "
          f"{type(image).__name__}")
    return self.transform(image)

  def _check_pixels(self, pixels: np.ndarray) -> None:
    want = (self.image_size, self.image_size, 3)
    if pixels.ndim != 4 or pixels.shape[1:] != want:
      raise ValueError(f"pixels must have shape (N, {want[0]}, {want[1]}, 3); "
                       f"got {pixels.shape}")

  def embed_pixels(self, pixels: np.ndarray, batch_size: int = 64
                   ) -> np.ndarray:
    """Embeds preprocessed images.

    Args:
      pixels: (N, S, S, 3) float32, already through `self.transform`.
      batch_size: images per jitted call.

    Returns:
      (N, D) float32, rows of unit norm.
    """
    pixels = np.asarray(pixels, np.float32)
    self._check_pixels(pixels)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return self.embed_batches(
        (pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)),
        batch_size=batch_size, num_images=len(pixels))

  def embed_images(self, images: Iterable[Any], batch_size: int = 64,
                   num_threads: int | None = None) -> np.ndarray:
    """Embeds a stream of images in batches under jit.

    Images are preprocessed with `self.transform` in a thread pool while
    the previous batch runs.

    Args:
      images: iterable of file paths, PIL images or uint8 (H, W[, C])
        arrays; consumed once, batch by batch.
      batch_size: images per device per call (the last batch is padded).
      num_threads: preprocessing threads (default: every CPU).

    Returns:
      (N, D) float32, rows of unit norm.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    total = len(images) if hasattr(images, "__len__") else None
    with concurrent.futures.ThreadPoolExecutor(
        num_threads or loader.default_threads()) as pool:
      return self.embed_batches(
          (np.stack(list(pool.map(self.preprocess, chunk)))
           for chunk in batches(images, batch_size)),
          batch_size=batch_size, num_images=total)

  def embed_batches(self, batches: Iterable[np.ndarray], batch_size: int = 64,
                    num_images: int | None = None) -> np.ndarray:
    """Embeds a stream of preprocessed batches (e.g. from
    jax_dissect.data.loader); see `iter_embed_batches`.

    Returns:
      (sum B_i, D) float32, rows of unit norm.
    """
    outputs = list(self.iter_embed_batches(batches, batch_size, num_images))
    if not outputs:
      return np.zeros((0, self.embed_dim), np.float32)
    return np.concatenate(outputs)

  def iter_embed_batches(self, batches: Iterable[np.ndarray],
                         batch_size: int = 64, num_images: int | None = None
                         ) -> Iterator[np.ndarray]:
    """Yields the embeddings of a stream of preprocessed batches, in order.

    Each batch is padded with zero rows to `batch_size` and is one device's
    share of a call (n devices embed n batches at once); the next call is
    dispatched before the embeddings of the last one are copied back.

    Args:
      batches: (B_i, S, S, 3) float32 batches through `self.transform`,
        B_i <= batch_size.
      batch_size: images per device per call.
      num_images: the total, for progress lines.

    Yields:
      (B_i, D) float32 per batch, rows of unit norm.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    progress = progress_lib.Progress(f"{self.kind} images", num_images,
                                     _PROGRESS_EVERY_S)

    def checked(batches):
      for batch in batches:
        batch = np.asarray(batch, np.float32)
        self._check_pixels(batch)
        yield batch

    for result, rows in self.data_parallel.run_batches(
        self._image_fn, self.params, checked(batches), batch_size):
      result = np.asarray(result, np.float32)
      precision.check_finite({self.kind: result}, self.compute_dtype,
                             "image embeddings")
      progress.update(rows)
      yield result
    progress.update(0, final=True)

  # -- texts ----------------------------------------------------------------

  def _text_fn(self, params: Any, *tokens: jax.Array) -> jax.Array:
    """Jitted: a padded batch of token arrays -> (B, D) unit rows."""
    raise NotImplementedError

  def tokenize(self, texts: Sequence[str]
               ) -> tuple[list[list[int]], list[int]]:
    """(token ids per text, indices of the texts that were truncated)."""
    raise NotImplementedError

  def _text_batch(self, rows: Sequence[int], ids: Sequence[Sequence[int]],
                  batch_size: int) -> tuple[np.ndarray, ...]:
    """The token arrays of one call's batch: texts `rows` of `ids`, padded
    to `batch_size` rows (all of one shape per length bucket)."""
    raise NotImplementedError

  @staticmethod
  def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
      raise ValueError("texts must be a sequence of strings, not one string")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
      raise ValueError(f"texts must be strings; got {bad[0]!r}")

  def embed_texts(self, texts: Sequence[str], batch_size: int = 256, *,
                  share: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Embeds texts (e.g. concepts) in batches under jit.

    Texts longer than `max_length` tokens are truncated (the end token is
    kept) with a warning naming how many. Texts are batched by token length
    (the batches do not depend on `share`, so neither do the embeddings).

    Args:
      texts: M strings, tokenized as written (no template added here).
      batch_size: texts per device per call.
      share: (i, n): compute only batches i, i + n, i + 2n, ... and leave
        the other rows zero (process i of n; the sum over the n shares is
        the whole result).

    Returns:
      (M, D) float32, rows of unit norm (zero rows outside `share`).
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    ids, truncated = self.tokenize(texts)
    if truncated:
      logging.warning(
          "%d of %d texts are longer than %s's %d tokens and were "
          "truncated (first: text %d, %r)", len(truncated), len(texts),
          self.kind, self.max_length, truncated[0], texts[truncated[0]][:80])
    progress = progress_lib.Progress(f"{self.kind} texts", len(ids),
                                     _PROGRESS_EVERY_S)
    out = np.zeros((len(ids), self.embed_dim), np.float32)
    # Batches of similar length waste little compute on padding.
    order = np.argsort([len(seq) for seq in ids], kind="stable")
    index, count = share
    chunks = [order[start:start + batch_size] for start in range(
        index * batch_size, len(ids), count * batch_size)]
    results = self.data_parallel.run_batches(
        self._text_fn, self.params,
        (self._text_batch(rows, ids, batch_size) for rows in chunks),
        batch_size)
    for i, (rows, (result, _)) in enumerate(zip(chunks, results)):
      out[rows] = result[:len(rows)]
      progress.update(len(rows), final=i == len(chunks) - 1)
    precision.check_finite({self.kind: out}, self.compute_dtype,
                           "text embeddings")
    return out
