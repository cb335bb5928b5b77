"""The input pipeline: probe images decoded and preprocessed ahead of use.

`batches` yields (B, H, W, 3) float32 batches of a range of a probe set;
JPEG decoding and resizing run in a thread pool sized to the machine
(PIL releases the GIL while it decodes and resizes), with `prefetch`
batches in flight beyond the one the devices are working on. `InputStats`
measures how long the consumer waited for its batches, which answers "are
the devices waiting for input?": a stage's images/s from files against its
images/s with the waits taken out (the rate on pre-decoded arrays).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import time
from typing import Callable, Iterator, Sequence

import numpy as np

from jax_dissect.data import probes as data_lib

# Batches decoded ahead of the one being computed on.
DEFAULT_PREFETCH = 2


def default_threads() -> int:
  """Decoding threads when `num_threads` is 0: every CPU this process may
  run on."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # Not on Linux.
    return max(1, os.cpu_count() or 1)


@dataclasses.dataclass
class InputStats:
  """What the consumer of `batches` waited for, summed over calls.

  Attributes:
    images: images delivered.
    wait_s: seconds the consumer spent waiting for decoded batches.
  """
  images: int = 0
  wait_s: float = 0.0

  def rates(self, seconds: float) -> tuple[float | None, float | None]:
    """(images/s from files, images/s with the input waits taken out) of a
    stage that took `seconds` for these images; None when there were none.
    """
    if not self.images or seconds <= 0:
      return None, None
    busy = seconds - self.wait_s
    return self.images / seconds, (self.images / busy if busy > 0 else None)


def batches(probe: data_lib.ProbeSet, start: int, stop: int,
            batch_size: int, transform: Callable, num_threads: int = 0,
            prefetch: int = DEFAULT_PREFETCH,
            stats: InputStats | None = None) -> Iterator[np.ndarray]:
  """(B, H, W, 3) batches of images [start, stop), decoded in threads.

  Args:
    probe: the probe set.
    start, stop: the range of images, in probe order.
    batch_size: images per batch (the last one may be smaller).
    transform: image -> (H, W, 3) float32 array (a model's preprocessing).
    num_threads: decoding threads; 0 for `default_threads()`.
    prefetch: batches decoded ahead of the one being consumed (>= 1).
    stats: if given, the images delivered and the time waited are added.

  Yields:
    Batches in order.
  """
  return range_batches(probe, [(start, stop)], batch_size, transform,
                       num_threads, prefetch, stats)


def range_batches(probe: data_lib.ProbeSet, ranges: Sequence[tuple[int, int]],
                  batch_size: int, transform: Callable, num_threads: int = 0,
                  prefetch: int = DEFAULT_PREFETCH,
                  stats: InputStats | None = None) -> Iterator[np.ndarray]:
  """The batches of several ranges of images, one after the other.

  Like `batches` for each (start, stop) of `ranges` in turn (no batch
  holds images of two ranges; the last batch of a range may be smaller),
  with one thread pool whose prefetching runs on across the ranges.

  Yields:
    (B, H, W, 3) batches in order.
  """
  if prefetch < 1:
    raise ValueError(f"prefetch={prefetch} must be >= 1")
  stats = stats if stats is not None else InputStats()

  def one(i):
    return transform(probe.load(i))

  def take(futures) -> np.ndarray:
    t0 = time.perf_counter()
    batch = np.stack([f.result() for f in futures])
    stats.wait_s += time.perf_counter() - t0
    stats.images += batch.shape[0]
    return batch

  with concurrent.futures.ThreadPoolExecutor(
      num_threads or default_threads()) as pool:
    pending = []
    for start, stop in ranges:
      for b in range(start, stop, batch_size):
        pending.append([pool.submit(one, i)
                        for i in range(b, min(b + batch_size, stop))])
        if len(pending) > prefetch:
          yield take(pending.pop(0))
    for futures in pending:
      yield take(futures)
