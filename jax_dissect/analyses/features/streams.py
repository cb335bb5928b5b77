"""Rows of activations for SAE training, in bounded memory.

A source gives blocks of rows (r, C): an array (numpy, jax, or a .npy file,
memory-mapped) of shape (N, C), (B, T, C) or (B, H, W, C) -- maps give one
row per position or token -- or an iterable of such blocks (read once), or
a callable returning a fresh iterable (read once per epoch).

Training draws batches from shuffle windows of at most `window_rows` rows:
the blocks of an epoch (an array's blocks in a seeded random order) are
gathered into windows, each window's rows are permuted, and the batches are
cut from it. A source smaller than one window is shuffled as a whole.
Memory: about two windows (the window and its permuted copy) and a block.
(Training also keeps the latest window, for the fit figures of a one-pass
stream; it is one of the two.)
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Iterator

import numpy as np

from jax_dissect.analyses.features import model


def _rows(x: np.ndarray, what: str, width: int | None) -> np.ndarray:
  """x as (rows, C) (a view where possible), or a one-line ValueError."""
  if x.ndim not in (2, 3, 4):
    raise ValueError(
        f"{what} has shape {tuple(x.shape)}; expected (N, C) rows, (B, T, C) "
        "token maps or (B, H, W, C) conv maps")
  if x.shape[-1] < 1 or (width is not None and x.shape[-1] != width):
    raise ValueError(f"{what} has {x.shape[-1]} channels (last axis of shape "
                     f"{tuple(x.shape)}); expected {width}")
  return x.reshape(-1, x.shape[-1])


class RowSource:
  """Blocks of (r, C) float32 rows from an array or an iterable.

  Attributes:
    width: C.
    num_rows: rows per pass, or None where unknown (an iterable).
    reusable: whether `blocks` can be called more than once.
  """

  def __init__(self, activations: Any):
    self._array = None
    self._factory = None
    self._once = None
    if isinstance(activations, (str, np.ndarray)) or hasattr(
        activations, "__array__") or hasattr(activations, "__fspath__"):
      x = _rows(model.as_array(activations), "activations", None)
      if x.shape[0] < 1:
        raise ValueError(f"activations is empty: shape {tuple(x.shape)}")
      self._array = x
      self.width, self.num_rows, self.reusable = x.shape[1], x.shape[0], True
      return
    if callable(activations):
      self._factory = activations
      first, rest = self._peek(iter(activations()))
      self.reusable = True
      del rest
    elif isinstance(activations, Iterable):
      first, self._once = self._peek(iter(activations))
      self.reusable = False
    else:
      raise ValueError(
          f"activations is a {type(activations).__name__}; expected an "
          "array, a .npy path, an iterable of row blocks, or a callable "
          "returning one")
    self.width, self.num_rows = first.shape[1], None

  @staticmethod
  def _peek(it: Iterator[Any]) -> tuple[np.ndarray, Iterator[Any]]:
    for raw in it:
      first = _rows(model.as_array(raw, "an activations block"),
                    "an activations block", None)
      if first.shape[0]:
        return first, itertools.chain([raw], it)
    raise ValueError("activations is an empty iterable; expected blocks of "
                     "rows (r, C)")

  def blocks(self, rng: np.random.Generator | None, block_rows: int
             ) -> Iterator[np.ndarray]:
    """One pass of (r, C) float32 blocks.

    Args:
      rng: shuffles an array's block order; None reads it in order.
      block_rows: rows of an array's blocks (an iterable's blocks come as
        they are).
    """
    if self._array is not None:
      n = self.num_rows
      count = math.ceil(n / block_rows)
      order = rng.permutation(count) if rng is not None else range(count)
      for b in order:
        yield np.asarray(self._array[b * block_rows:(b + 1) * block_rows],
                         np.float32)
      return
    if self._factory is not None:
      raws = iter(self._factory())
    elif self._once is not None:
      raws, self._once = self._once, None
    else:
      raise ValueError("activations is an iterable that was already read; "
                       "pass a callable returning a fresh iterable to read "
                       "it again")
    for raw in raws:
      block = _rows(model.as_array(raw, "an activations block"),
                    "an activations block", self.width)
      if block.shape[0]:
        yield np.asarray(block, np.float32)


def windows(blocks: Iterable[np.ndarray], window_rows: int
            ) -> Iterator[np.ndarray]:
  """Gathers blocks into (<= window_rows, C) windows (checked finite)."""
  parts, size, start = [], 0, 0
  for block in blocks:
    while block.shape[0]:
      take = min(window_rows - size, block.shape[0])
      parts.append(block[:take])
      size += take
      block = block[take:]
      if size == window_rows:
        yield _checked(parts, start)
        start += size
        parts, size = [], 0
  if size:
    yield _checked(parts, start)


def _checked(parts: list[np.ndarray], start: int) -> np.ndarray:
  window = parts[0] if len(parts) == 1 else np.concatenate(parts)
  if not np.isfinite(window).all():
    bad = int(np.size(window) - np.isfinite(window).sum())
    raise ValueError(f"activations contain {bad} NaN or inf value(s) in "
                     f"rows {start}..{start + len(window) - 1} of the "
                     "stream; all values must be finite")
  return window


def batches(wins: Iterable[np.ndarray], batch_size: int,
            rng: np.random.Generator | None) -> Iterator[np.ndarray]:
  """Batches of batch_size rows cut from permuted windows.

  A window's rows left over (fewer than batch_size) open the next window's
  first batch; the last batch of the pass may have fewer rows.
  """
  carry = None
  for window in wins:
    if rng is not None:
      window = window[rng.permutation(window.shape[0])]
    start = 0
    if carry is not None:  # The carry and the window's first rows.
      start = min(batch_size - carry.shape[0], window.shape[0])
      carry = np.concatenate([carry, window[:start]])
      if carry.shape[0] < batch_size:
        continue
      yield carry
      carry = None
    full = start + (window.shape[0] - start) // batch_size * batch_size
    for lo in range(start, full, batch_size):
      yield window[lo:lo + batch_size]
    if full < window.shape[0]:
      carry = window[full:].copy()  # Frees the window.
  if carry is not None:
    yield carry


def window_rows_for(memory_bytes: int, width: int, batch_size: int) -> int:
  """Rows of a shuffle window: two float32 copies within memory_bytes."""
  return max(batch_size, memory_bytes // (2 * 4 * width))


def as_source(activations: Any) -> RowSource:
  """`activations` as a RowSource (see the module doc)."""
  if isinstance(activations, RowSource):
    return activations
  return RowSource(activations)
