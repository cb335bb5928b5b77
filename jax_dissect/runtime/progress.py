"""Progress of long stages: counts, rate and ETA.

By default a `Progress` logs `what: done/total (pct), rate/s, ETA` via absl
logging at most every `every_s`. An entry point may install a display
instead (`set_display`, e.g. a bar on the terminal: jax_dissect.commands
does); it then gets every update, and the start and end of each named
stage (`stage`), and draws them as it likes. The library never installs
one.
"""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import time
from typing import Protocol

from absl import logging


class Display(Protocol):
  """What an entry point's progress display receives."""

  def update(self, progress: "Progress", final: bool) -> None:
    """A count changed (`final`: the counting is over)."""

  def stage(self, name: str, done: bool, ok: bool = True) -> None:
    """Stage `name` started (done=False) or ended (done=True; ok=False if
    by an exception)."""


_display: Display | None = None


def set_display(display: Display | None) -> Display | None:
  """Installs `display` (None: log lines again); returns the previous one.

  Only entry points call this (the library logs).
  """
  global _display
  previous, _display = _display, display
  return previous


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
  """Tells the display that stage `name` runs while the block runs."""
  if _display is not None:
    _display.stage(name, False)
  try:
    yield
  except BaseException:
    if _display is not None:
      _display.stage(name, True, ok=False)
    raise
  if _display is not None:
    _display.stage(name, True)


class Progress:
  """Counts work done; logs (or displays) count, rate and ETA.

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

  @property
  def rate(self) -> float:
    """Count per second so far."""
    return self.done / max(self.elapsed, 1e-9)

  @property
  def eta(self) -> float | None:
    """Seconds left at the rate so far (None without a total or rate)."""
    if not self.total or not self.done:
      return None
    return max(self.total - self.done, 0) / max(self.rate, 1e-9)

  def update(self, n: int, final: bool = False) -> None:
    """Adds n to the count; logs if `every_s` passed or `final`."""
    self.done += n
    if _display is not None:
      _display.update(self, final)
      return
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
