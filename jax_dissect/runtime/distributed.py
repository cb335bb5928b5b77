"""The processes of a run: one, or several under jax.distributed.

The library never starts the distributed runtime (the entry points call
jax.distributed.initialize, jax_dissect/commands/describe.py); it reads
the process index and count JAX reports and coordinates the processes of a
run through JAX's collectives:

  procs = Processes.current()       # index 0 of 1 unless initialized
  start, stop = procs.block(num_items)   # this process's contiguous slice
  procs.barrier("activations joined")    # every process waits here
  hits = procs.agree([cache.has(k) for k in keys])  # process 0's answer
  full = procs.sum(partial)         # rows each process filled, combined

With one process every method is a no-op (no JAX call at all). With
several, every process must make the same calls in the same order; a call
that fails because another process stopped raises `PeerLostError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Sequence
import uuid

import numpy as np


class PeerLostError(RuntimeError):
  """A collective with the other processes of the run failed."""


def _lost(index: int, count: int, what: str, err: BaseException
          ) -> PeerLostError:
  cause = str(err).strip().splitlines()[0] if str(err).strip() else type(
      err).__name__
  return PeerLostError(
      f"process {index} of {count} lost contact with the other processes of "
      f"the run while {what} (another process stopped or its host is "
      f"unreachable: {cause[:200]}); finished cache shards are kept: start "
      "every process again to resume")


@dataclasses.dataclass(frozen=True)
class Processes:
  """This process's index among `count` processes of one run.

  Attributes:
    index: jax.process_index() of this process (0 writes the results).
    count: jax.process_count().
  """
  index: int = 0
  count: int = 1

  @classmethod
  def current(cls) -> "Processes":
    """The processes JAX knows of (1 unless jax.distributed is running)."""
    import jax  # pylint: disable=g-import-not-at-top
    return cls(jax.process_index(), jax.process_count())

  @property
  def is_main(self) -> bool:
    """Whether this is process 0, the one that writes shared results."""
    return self.index == 0

  def block(self, num_items: int) -> tuple[int, int]:
    """[start, stop) of this process's contiguous share of `num_items`."""
    return (num_items * self.index // self.count,
            num_items * (self.index + 1) // self.count)

  def _collective(self, what: str, fn: Callable[[], Any]) -> Any:
    try:
      return fn()
    except Exception as e:  # XLA reports a dead peer with several types.
      raise _lost(self.index, self.count, what, e) from e

  def barrier(self, name: str) -> None:
    """Waits until every process reaches the barrier of the same name."""
    if self.count == 1:
      return
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    self._collective(f"waiting at {name!r}",
                     lambda: multihost_utils.sync_global_devices(name))

  def agree(self, flags: Sequence[bool]) -> list[bool]:
    """Process 0's `flags` on every process (e.g. which cache entries exist,
    so every process takes the same branch)."""
    if self.count == 1:
      return [bool(f) for f in flags]
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    out = self._collective("agreeing on the cache", lambda: (
        multihost_utils.broadcast_one_to_all(
            np.asarray([int(bool(f)) for f in flags] or [0], np.int32))))
    return [bool(v) for v in np.asarray(out)[:len(flags)]]

  def sum(self, array: np.ndarray) -> np.ndarray:
    """The sum over processes of `array` (same shape and dtype on each).

    Rows that one process filled and the others left at zero come out
    exactly as that process computed them.
    """
    if self.count == 1:
      return np.asarray(array)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    array = np.asarray(array)
    gathered = self._collective("combining results", lambda: (
        multihost_utils.process_allgather(array)))
    return np.asarray(gathered).sum(axis=0, dtype=array.dtype)

  def check_same(self, what: str, value: str) -> None:
    """Raises ValueError if `value` differs between processes.

    Args:
      what: what `value` is, for the message (e.g. "probe set").
      value: a string every process must agree on.
    """
    if self.count == 1:
      return
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    digest = np.frombuffer(hashlib.sha256(value.encode()).digest()[:16],
                           np.int32)
    every = np.asarray(self._collective(
        f"comparing the {what}",
        lambda: multihost_utils.process_allgather(digest)))
    differ = [p for p in range(self.count)
              if not np.array_equal(every[p], every[0])]
    if differ:
      raise ValueError(
          f"the {what} of process(es) {differ} differs from process 0's; "
          "every process must run the same config on the same data")

  def check_shared_directory(self, path: str, what: str) -> None:
    """Raises ValueError unless every process sees the files process 0
    writes under `path` (the cache must be on a shared file system)."""
    if self.count == 1:
      return
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    token = np.frombuffer(uuid.uuid4().bytes, np.int32)
    token = np.asarray(self._collective(
        f"checking {what}",
        lambda: multihost_utils.broadcast_one_to_all(token)))
    marker = os.path.join(path, f".process-check-{token.tobytes().hex()}")
    if self.is_main:
      with open(marker, "w", encoding="utf-8"):
        pass
    self.barrier(f"{what}: marker written")
    seen = np.asarray([int(os.path.exists(marker))], np.int32)
    every = np.asarray(self._collective(
        f"checking {what}",
        lambda: multihost_utils.process_allgather(seen))).reshape(-1)
    if self.is_main:
      os.remove(marker)
    blind = [p for p in range(self.count) if not every[p]]
    if blind:
      raise ValueError(
          f"{what} {path!r} is not shared: process(es) {blind} do not see "
          "the files process 0 writes there; put it on a file system every "
          "process sees (NFS, GCS-fuse, a shared disk)")
