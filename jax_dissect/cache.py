"""Content-addressed cache of expensive arrays.

An entry's key is a hash of everything that determines the array (model
identity and weight fingerprint, layer, pooling, preprocessing, the probe
set's identity and ordered image fingerprints, the concept list...), so a
changed input always maps to a different entry and a stale one is never
reused. Writes are atomic (temporary file in the same directory, fsync, then
rename): a crash leaves either the whole entry or nothing.

Long streaming computations store their output in row shards
(`ShardedWriter`), so an interrupted run resumes from the last saved shard.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Any, Iterator

from absl import logging
import numpy as np


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


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path; on success it is renamed to `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-",
                             suffix=os.path.splitext(path)[1])
  os.close(fd)
  try:
    yield tmp
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def save_npy_atomic(path: str, array: np.ndarray) -> None:
  with atomic_path(path) as tmp:
    np.save(tmp, array, allow_pickle=False)


def write_text_atomic(path: str, text: str) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)


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

  def save(self, key: str, array: np.ndarray,
           describe: dict[str, Any] | None = None) -> str:
    path = self.path(key)
    if describe is not None:
      write_text_atomic(os.path.join(self.root, key + ".json"),
                        json.dumps(describe, indent=1, sort_keys=True,
                                   default=str))
    save_npy_atomic(path, np.asarray(array))
    return path

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
    os.makedirs(self.parts_dir, exist_ok=True)
    save_npy_atomic(self._part(shard), rows)

  def finish(self, describe: dict[str, Any] | None = None) -> np.ndarray:
    """Joins the shards into the entry (streamed to disk) and returns it."""
    missing = self.missing()
    if missing:
      raise RuntimeError(f"{self.key}: shards {missing} were never saved")
    first = np.load(self._part(0), mmap_mode="r")
    path = self.cache.path(self.key)
    with atomic_path(path) as tmp:
      out = np.lib.format.open_memmap(
          tmp, mode="w+", dtype=first.dtype,
          shape=(self.num_rows,) + first.shape[1:])
      for s in range(self.num_shards):
        start, stop = self.shard_range(s)
        out[start:stop] = np.load(self._part(s), mmap_mode="r")
      out.flush()
      del out
    if describe is not None:
      write_text_atomic(os.path.join(self.cache.root, self.key + ".json"),
                        json.dumps(describe, indent=1, sort_keys=True,
                                   default=str))
    for s in range(self.num_shards):
      os.remove(self._part(s))
    with contextlib.suppress(OSError):
      os.rmdir(self.parts_dir)
    logging.debug("cache: wrote %s", path)
    return self.cache.load(self.key)
