"""The shard grid of a streamed cache entry and the processes sharing it.

A long computation (image embeddings, activations) is stored in row shards,
so a killed run resumes at the first missing shard. With several processes
each computes a contiguous block of the grid; the grid does not depend on
the process count, so any number of processes resumes any other's shards.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np


class Processes(Protocol):
  """What `ArrayCache.rows` needs of the processes sharing a computation
  (jax_dissect.runtime.distributed.Processes; a single process by default)."""
  index: int
  count: int

  def barrier(self, name: str) -> None:
    ...

  def agree(self, flags: Sequence[bool]) -> list[bool]:
    ...


class OneProcess:
  index, count = 0, 1

  def barrier(self, name: str) -> None:
    del name

  def agree(self, flags: Sequence[bool]) -> list[bool]:
    return list(flags)


def process_shards(num_shards: int, processes: Processes) -> range:
  """The shards one process computes: a contiguous block of the grid.

  The shard grid (`shard_rows` rows each) is the same for any number of
  processes, so a cache left by a run of n processes is resumed by a run
  of any number.
  """
  return range(num_shards * processes.index // processes.count,
               num_shards * (processes.index + 1) // processes.count)


# (ranges, names) -> {name: rows [start, stop)} per (start, stop) of ranges.
ComputeRows = Callable[[list[tuple[int, int]], list[str]],
                       Iterable[dict[str, np.ndarray]]]


def total_rows(ranges: Iterable[tuple[int, int]]) -> int:
  """The number of rows in (start, stop) ranges."""
  return sum(stop - start for start, stop in ranges)


def per_shard(compute: Callable[[int, int, list[str]], dict[str, np.ndarray]]
              ) -> ComputeRows:
  """A `rows` compute from a function of one shard (start, stop, names)."""
  return lambda ranges, names: (compute(a, b, names) for a, b in ranges)


def rows_by_range(batches: Iterable[dict[str, np.ndarray]],
                  ranges: Sequence[tuple[int, int]]
                  ) -> Iterator[dict[str, np.ndarray]]:
  """Joins a stream of batches into the rows of each range.

  Args:
    batches: {name: (B_i, ...)} per batch, in order; no batch holds rows of
      two ranges (e.g. from loader.range_batches).
    ranges: (start, stop) row ranges, in the order of the batches.

  Yields:
    {name: (stop - start, ...)} per range.

  Raises:
    ValueError: if the batches end early, a batch spans two ranges, or
      batches are left over.
  """
  batches = iter(batches)
  for start, stop in ranges:
    parts, count = [], 0
    while count < stop - start:
      batch = next(batches, None)
      if batch is None:
        raise ValueError(f"the batches ended at row {start + count}, before "
                         f"the end of range [{start}, {stop})")
      parts.append(batch)
      count += len(next(iter(batch.values())))
    if count != stop - start:
      raise ValueError(f"a batch spans the end of range [{start}, {stop})")
    yield {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
  # Runs the producer to its end (its closing lines), checking it is done.
  if next(batches, None) is not None:
    raise ValueError(f"more batches than the rows of {len(ranges)} range(s)")
