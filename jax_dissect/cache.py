"""Content-addressed cache of expensive arrays.

An entry's key is a hash of everything that determines the array (model
identity and weight fingerprint, layer, pooling, preprocessing, the probe
set's identity and ordered image fingerprints, the concept list...), so a
changed input always maps to a different entry and a stale one is never
reused. Writes are atomic (temporary file in the same directory, fsync, then
rename, jax_dissect.files): a crash leaves either the whole entry or
nothing.

Long streaming computations store their output in row shards
(`ShardedWriter`, driven by `ArrayCache.rows`), so an interrupted run resumes
from the last saved shard. Small results (a probe scan, a layer's labels)
are JSON entries (`load_json` / `save_json`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from typing import Any, Callable, Protocol, Sequence

from absl import logging
import numpy as np

from jax_dissect import files
from jax_dissect import progress as progress_lib


def fingerprint(*parts: Any) -> str:
  """A stable hex digest of JSON-able parts (dict keys sorted)."""
  blob = json.dumps(parts, sort_keys=True, separators=(",", ":"),
                    default=_json_default)
  return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _json_default(x: Any) -> Any:
  if isinstance(x, np.ndarray):
    return {"__ndarray__": array_fingerprint(x)}
  if isinstance(x, (np.integer, np.floating)):
    return x.item()
  if isinstance(x, (set, frozenset)):
    return sorted(x)
  raise TypeError(f"cannot fingerprint {type(x).__name__}: {x!r}")


def array_fingerprint(x: np.ndarray) -> str:
  """Digest of an array's dtype, shape and bytes."""
  x = np.ascontiguousarray(x)
  h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
  h.update(memoryview(x).cast("B"))
  return h.hexdigest()


class Processes(Protocol):
  """What `ArrayCache.rows` needs of the processes sharing a computation
  (jax_dissect.distributed.Processes; a single process by default)."""
  index: int
  count: int

  def barrier(self, name: str) -> None:
    ...

  def agree(self, flags: Sequence[bool]) -> list[bool]:
    ...


class _OneProcess:
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


class ArrayCache:
  """A directory of .npy entries named by content keys.

  Layout: <root>/<kind>/<key>.npy with <key>.json beside it (the parts the
  key was made from, for humans), and <kind>/<key>.parts/ for the shards of
  an entry being built.
  """

  def __init__(self, root: str):
    self.root = os.path.abspath(os.path.expanduser(root))
    os.makedirs(self.root, exist_ok=True)

  def key(self, kind: str, **parts: Any) -> str:
    return f"{kind}/{fingerprint(kind, parts)[:40]}"

  def path(self, key: str) -> str:
    return os.path.join(self.root, key + ".npy")

  def has(self, key: str) -> bool:
    return os.path.exists(self.path(key))

  def load(self, key: str, mmap: bool = True) -> np.ndarray:
    return np.load(self.path(key), mmap_mode="r" if mmap else None,
                   allow_pickle=False)

  def _describe(self, key: str, describe: dict[str, Any] | None) -> None:
    if describe is not None:
      files.write_text(os.path.join(self.root, key + ".json"),
                       json.dumps(describe, indent=1, sort_keys=True,
                                  default=str))

  def save(self, key: str, array: np.ndarray,
           describe: dict[str, Any] | None = None) -> str:
    self._describe(key, describe)
    return files.save_npy(self.path(key), np.asarray(array))

  def json_path(self, key: str) -> str:
    return os.path.join(self.root, key + ".entry.json")

  def load_json(self, key: str) -> Any | None:
    """A JSON entry's value, or None if there is none."""
    path = self.json_path(key)
    if not os.path.exists(path):
      return None
    with open(path, encoding="utf-8") as f:
      return json.load(f)

  def save_json(self, key: str, value: Any) -> str:
    """Stores a JSON-able value as entry `key` (atomically)."""
    return files.write_text(self.json_path(key), json.dumps(value))

  def rows(self, keys: dict[str, str], what: str, num_rows: int,
           shard_rows: int,
           compute: Callable[[int, int, list[str]], dict[str, np.ndarray]],
           describe: dict[str, dict] | None = None,
           processes: Processes | None = None) -> dict[str, np.ndarray]:
    """Arrays {name: (num_rows, ...)} from the cache, or computed in shards.

    Entries already in the cache are loaded ("cache hit" in the log). The
    others are computed `shard_rows` rows at a time, each shard saved as it
    finishes, so an interrupted call resumes at the first missing shard
    ("resuming" in the log); then the shards are joined into the entries.

    With several processes (the cache on a file system they all see), each
    computes its own block of shards (`process_shards`); process 0 joins
    them once every process has saved its own, and every process returns
    the joined entries. All processes take process 0's view of which
    entries exist.

    Args:
      keys: {name: cache key} of the arrays.
      what: human name for log lines (e.g. "activations").
      num_rows: rows (probe images) of every array.
      shard_rows: rows per saved shard.
      compute: (start, stop, names) -> {name: rows [start, stop)} for the
        names whose shard is missing.
      describe: {name: metadata saved beside the entry}.
      processes: the processes sharing the work (default: this one only).

    Returns:
      {name: array (memory-mapped from the cache)}.
    """
    describe = describe or {}
    processes = processes or _OneProcess()
    out = {}
    hits = processes.agree([self.has(key) for key in keys.values()])
    for (name, key), hit in zip(keys.items(), hits):
      if hit:
        logging.info("cache hit: %s [%s]", what, name)
        out[name] = self.load(key)
    todo = [n for n in keys if n not in out]
    if not todo:
      return out
    writers = {n: self.sharded_writer(keys[n], num_rows, shard_rows)
               for n in todo}
    first = writers[todo[0]]
    saved = sum(w.has(s) for w in writers.values()
                for s in range(w.num_shards))
    logging.info("computing: %s [%s] (%d images in %d shard(s)%s)", what,
                 ", ".join(todo), num_rows, first.num_shards,
                 f"; resuming: {saved} of {first.num_shards * len(todo)} "
                 "shard files already saved" if saved else "")
    mine = process_shards(first.num_shards, processes)
    progress = progress_lib.Progress(what, sum(
        stop - start for start, stop in map(first.shard_range, mine)))
    for s in mine:
      start, stop = first.shard_range(s)
      names = [n for n in todo if not writers[n].has(s)]
      if names:
        rows = compute(start, stop, names)
        for n in names:
          writers[n].save(s, rows[n])
      progress.update(stop - start, final=s == mine[-1])
    out.update(self._join(keys, todo, writers, describe, processes, what))
    return out

  def _join(self, keys: dict[str, str], todo: list[str],
            writers: dict[str, "ShardedWriter"], describe: dict[str, dict],
            processes: Processes, what: str) -> dict[str, np.ndarray]:
    """Joins the shards of `todo` (process 0, once every process saved its
    own) and returns the entries."""
    if processes.count == 1:
      return {n: writers[n].finish(describe.get(n)) for n in todo}
    processes.barrier(f"{what}: shards saved")
    if processes.index == 0:
      for n in todo:
        writers[n].finish(describe.get(n))
    processes.barrier(f"{what}: shards joined")
    return {n: self.load(keys[n]) for n in todo}

  def sharded_writer(self, key: str, num_rows: int,
                     shard_rows: int) -> "ShardedWriter":
    return ShardedWriter(self, key, num_rows, shard_rows)


class ShardedWriter:
  """Builds a cache entry of `num_rows` rows from shards of `shard_rows`.

  Each finished shard is saved atomically under <key>.parts/; `missing()`
  lists the shards still to compute, so a rerun after a crash only computes
  those; `finish()` joins them into the entry and removes the parts.
  """

  def __init__(self, cache: ArrayCache, key: str, num_rows: int,
               shard_rows: int):
    if shard_rows < 1:
      raise ValueError(f"shard_rows={shard_rows} must be >= 1")
    self.cache, self.key = cache, key
    self.num_rows, self.shard_rows = num_rows, shard_rows
    self.parts_dir = os.path.join(cache.root, key + ".parts")
    self.num_shards = max(1, -(-num_rows // shard_rows))

  def shard_range(self, shard: int) -> tuple[int, int]:
    start = shard * self.shard_rows
    return start, min(start + self.shard_rows, self.num_rows)

  def _part(self, shard: int) -> str:
    return os.path.join(self.parts_dir, f"{shard:06d}.npy")

  def has(self, shard: int) -> bool:
    return os.path.exists(self._part(shard))

  def missing(self) -> list[int]:
    return [s for s in range(self.num_shards) if not self.has(s)]

  def save(self, shard: int, rows: np.ndarray) -> None:
    start, stop = self.shard_range(shard)
    if rows.shape[0] != stop - start:
      raise ValueError(f"shard {shard} of {self.key} must have "
                       f"{stop - start} rows, got {rows.shape[0]}")
    files.save_npy(self._part(shard), rows)

  def finish(self, describe: dict[str, Any] | None = None) -> np.ndarray:
    """Joins the shards into the entry (streamed to disk) and returns it."""
    missing = self.missing()
    if missing:
      raise RuntimeError(f"{self.key}: shards {missing} were never saved")
    first = np.load(self._part(0), mmap_mode="r")
    path = self.cache.path(self.key)
    with files.atomic_path(path) as tmp:
      out = np.lib.format.open_memmap(
          tmp, mode="w+", dtype=first.dtype,
          shape=(self.num_rows,) + first.shape[1:])
      for s in range(self.num_shards):
        start, stop = self.shard_range(s)
        out[start:stop] = np.load(self._part(s), mmap_mode="r")
      out.flush()
      del out
    self.cache._describe(self.key, describe)  # pylint: disable=protected-access
    for s in range(self.num_shards):
      os.remove(self._part(s))
    with contextlib.suppress(OSError):
      os.rmdir(self.parts_dir)
    logging.debug("cache: wrote %s", path)
    return self.cache.load(self.key)
