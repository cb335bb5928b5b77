"""Progress lines for long stages: counts, rate and ETA via absl logging."""

from __future__ import annotations

import time

from absl import logging


class Progress:
  """Logs `what: done/total (pct), rate/s, ETA` at most every `every_s`.

  Attributes:
    what: what is counted, e.g. "CLIP images" or "activations".
    total: the expected count, or None when unknown (no ETA then).
    done: the count so far.
  """

  def __init__(self, what: str, total: int | None, every_s: float = 10.0):
    self.what, self.total, self.every_s = what, total, every_s
    self.done = 0
    self.start = self.last = time.perf_counter()

  @property
  def elapsed(self) -> float:
    return time.perf_counter() - self.start

  def update(self, n: int, final: bool = False) -> None:
    """Adds n to the count; logs if `every_s` passed or `final`."""
    self.done += n
    now = time.perf_counter()
    if not final and now - self.last < self.every_s:
      return
    self.last = now
    rate = self.done / max(now - self.start, 1e-9)
    if self.total:
      eta = (self.total - self.done) / max(rate, 1e-9)
      logging.info("%s: %d/%d (%.0f%%), %.1f/s, ETA %.0f s", self.what,
                   self.done, self.total, 100 * self.done / self.total, rate,
                   eta)
    else:
      logging.info("%s: %d, %.1f/s", self.what, self.done, rate)
