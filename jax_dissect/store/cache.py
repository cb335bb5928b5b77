"""Content-addressed cache of expensive arrays.

An entry's key is a hash of everything that determines the array (model
identity and weight fingerprint, layer, pooling, preprocessing, the probe
set's identity and ordered image fingerprints, the concept list...), so a
changed input always maps to a different entry and a stale one is never
reused. Writes are atomic (temporary file in the same directory, fsync, then
rename, jax_dissect.store.files): a crash leaves either the whole entry or
nothing.

Integrity: every array entry has a check record beside it
(`<key>.check.json`: size, dtype, shape and a CRC-32 of the file), written
before the entry is renamed into place; a read checks the size and header
always and the CRC on the first use of the file in a process
(`verify="checksum"`, the default; `verify="header"` skips the CRC). JSON
entries carry the SHA-256 of their value in their first line. A damaged
entry is logged with its path and recomputed, never served; so is an entry
without its record (nothing vouches for its bytes) and anything at an
entry's path that is not a regular file (removed first).

Sharing: several processes may use one cache directory. A process takes an
exclusive lock (`flock` on `locks/<key>.lock`) on each entry it builds, so
another process that wants the same entry waits for it and then reads it
instead of computing it again. A killed process's locks are released by the
kernel; its temporaries and stale shard directories are removed by the next
`ArrayCache` opened on the directory (`remove_orphans`). The processes of
one multi-process run (`ArrayCache.rows` with `processes`) share an entry's
work instead: process 0 holds its lock while every process computes its own
block of shards, and joins them after a barrier.

Long streaming computations store their output in row shards
(`ShardedWriter`, driven by `ArrayCache.rows`), so an interrupted run resumes
from the last saved shard. Small results (a probe scan, a layer's labels)
are JSON entries (`load_json` / `save_json`).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import stat
from typing import Any, Callable, Iterator

from absl import logging
import numpy as np

from jax_dissect.runtime import progress as progress_lib
from jax_dissect.store import files
from jax_dissect.store import integrity
from jax_dissect.store import locks
from jax_dissect.store import shard_grid


class ArrayCache:
  """A directory of .npy entries named by content keys.

  Layout: <root>/<kind>/<key>.npy with <key>.check.json beside it (its
  integrity record) and <key>.json (the parts the key was made from, for
  humans); <kind>/<key>.entry.json for JSON entries; <kind>/<key>.parts/ for
  the shards of an entry being built; locks/<kind>/<key>.lock, the entry's
  lock file (empty, kept).
  """

  def __init__(self, root: str, verify: str = "checksum",
               clean: bool = True):
    """Opens (and creates) the cache at `root`.

    Args:
      root: the cache directory.
      verify: "checksum" (size, header and CRC of each entry on its first
        use in the process) or "header" (size and header only).
      clean: remove what killed processes left behind (`remove_orphans`).
    """
    if verify not in integrity.VERIFY_MODES:
      raise ValueError(f"cache_verify={verify!r} is not valid; allowed: "
                       f"{', '.join(integrity.VERIFY_MODES)}")
    self.root = os.path.abspath(os.path.expanduser(root))
    self.checksum = verify == "checksum"
    os.makedirs(self.root, exist_ok=True)
    if clean:
      removed = self.remove_orphans()
      if removed:
        logging.info("cache: removed %d file(s) left by killed runs",
                     len(removed))

  def key(self, kind: str, **parts: Any) -> str:
    return f"{kind}/{integrity.fingerprint(kind, parts)[:40]}"

  def path(self, key: str) -> str:
    return os.path.join(self.root, key + ".npy")

  def lock_path(self, key: str) -> str:
    return os.path.join(self.root, "locks", key + ".lock")

  def locked(self, key: str) -> contextlib.AbstractContextManager[None]:
    """Holds entry `key`'s lock: other processes building it wait."""
    return locks.file_lock(self.lock_path(key), key)

  @contextlib.contextmanager
  def _all_locked(self, keys: list[str]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
      for key in sorted(set(keys)):  # One order everywhere: no deadlock.
        stack.enter_context(self.locked(key))
      yield

  def _sound(self, key: str, path: str) -> bool:
    """True if file `path` of entry `key` passes its check.

    A damaged file is checked again under the entry's lock (a writer may
    have been replacing it), then logged with its path and removed (a
    directory or other non-file too).
    """
    if integrity.verify(path, checksum=self.checksum) is None:
      return True
    with self.locked(key):
      integrity.forget(path)
      reason = integrity.verify(path, checksum=self.checksum)
      if reason is None:
        return True
      if reason != "missing":
        logging.warning("cache: damaged entry %s (%s); it is recomputed",
                        path, reason)
        for p in (path, integrity.check_path(path)):
          _remove_any(p)
        integrity.forget(path)
    return False

  def has(self, key: str) -> bool:
    """True if entry `key` exists and passes its integrity check."""
    path = self.path(key)
    return os.path.lexists(path) and self._sound(key, path)

  def load(self, key: str, mmap: bool = True) -> np.ndarray:
    """Entry `key`, checked; integrity.DamagedEntryError if damaged."""
    return integrity.load_verified(self.path(key), checksum=self.checksum,
                                   mmap=mmap)

  def _describe(self, key: str, describe: dict[str, Any] | None) -> None:
    if describe is not None:
      files.write_text(os.path.join(self.root, key + ".json"),
                       json.dumps(describe, indent=1, sort_keys=True,
                                  default=str))

  def save_with(self, key: str, write: Callable[[str], Any],
                describe: dict[str, Any] | None = None) -> str:
    """Entry `key` written by write(path) into a temporary, its check
    record written, then the temporary renamed into place (so the entry
    never exists without its record)."""
    path = self.path(key)
    with self.locked(key):
      _save_checked(path, write)
      self._describe(key, describe)
    return path

  def save(self, key: str, array: np.ndarray,
           describe: dict[str, Any] | None = None) -> str:
    return self.save_with(
        key, lambda path: files.save_npy(path, np.asarray(array)), describe)

  def json_path(self, key: str) -> str:
    return os.path.join(self.root, key + ".entry.json")

  def load_json(self, key: str) -> Any | None:
    """A JSON entry's value, or None if there is none or it is damaged."""
    path = self.json_path(key)
    found, value = _read_json_entry(path)
    if found != "damaged":
      return value
    with self.locked(key):  # A writer may have been replacing it.
      found, value = _read_json_entry(path)
      if found != "damaged":
        return value
      logging.warning("cache: damaged JSON entry %s (its checksum does not "
                      "match or it has none); it is recomputed", path)
      _remove_any(path)
    return None

  def save_json(self, key: str, value: Any) -> str:
    """Stores a JSON-able value as entry `key` (atomically, checksummed)."""
    body = json.dumps(value).encode("utf-8")
    header = json.dumps({"format": integrity.JSON_HEADER,
                         "sha256": hashlib.sha256(body).hexdigest()})
    with self.locked(key):
      path = self.json_path(key)
      if os.path.lexists(path) and not os.path.isfile(path):
        _remove_any(path)
      return files.write_bytes(path, header.encode("utf-8") + b"\n" + body)

  def rows(self, keys: dict[str, str], what: str, num_rows: int,
           shard_rows: int,
           compute: shard_grid.ComputeRows,
           describe: dict[str, dict] | None = None,
           processes: shard_grid.Processes | None = None
           ) -> dict[str, np.ndarray]:
    """Arrays {name: (num_rows, ...)} from the cache, or computed in shards.

    Entries already in the cache are loaded ("cache hit" in the log). The
    others are computed `shard_rows` rows at a time, each shard saved as it
    finishes, so an interrupted call resumes at the first missing shard
    ("resuming" in the log); then the shards are joined into the entries.
    The entries being built are locked (all of them, in sorted key order):
    another run asking for them waits, then loads them.

    With several processes (the cache on a file system they all see), each
    computes its own block of shards (`shard_grid.process_shards`); process 0
    joins them once every process has saved its own, and every process returns
    the joined entries. All processes take process 0's view of which entries
    exist, and only process 0 takes the entries' locks: the others work under
    them (taking them too would wait for process 0 while it waits for them at
    the barrier).

    Args:
      keys: {name: cache key} of the arrays.
      what: human name for log lines (e.g. "activations").
      num_rows: rows (probe images) of every array.
      shard_rows: rows per saved shard.
      compute: (ranges, names) -> an iterator of {name: rows [start, stop)}
        for each (start, stop) of `ranges` in order (consecutive shards
        missing the same names: compute them as one stream, e.g. with
        `shard_grid.rows_by_range`, or one by one with `shard_grid.per_shard`).
      describe: {name: metadata saved beside the entry}.
      processes: the processes sharing the work (default: this one only).

    Returns:
      {name: array (memory-mapped from the cache)}.
    """
    processes = processes or shard_grid.OneProcess()
    out = self._hits(keys, list(keys), what, processes)
    todo = [n for n in keys if n not in out]
    if not todo:
      return out
    locks = (self._all_locked([keys[n] for n in todo])
             if processes.index == 0 else contextlib.nullcontext())
    with locks:
      # Another run may have built them while process 0 waited.
      out.update(self._hits(keys, todo, what, processes))
      todo = [n for n in keys if n not in out]
      if todo:
        out.update(self._build_rows(keys, todo, what, num_rows, shard_rows,
                                    compute, describe or {}, processes))
    return out

  def _hits(self, keys: dict[str, str], names: list[str], what: str,
            processes: shard_grid.Processes) -> dict[str, np.ndarray]:
    """The entries of `names` in the cache, by process 0's check (a
    collective: every process calls it with the same names)."""
    main = processes.index == 0
    found = processes.agree([main and self.has(keys[n]) for n in names])
    out = {}
    for name, hit in zip(names, found):
      if hit:
        logging.info("cache hit: %s [%s]", what, name)
        out[name] = self.load(keys[name])
    return out

  def _build_rows(self, keys: dict[str, str], todo: list[str], what: str,
                  num_rows: int, shard_rows: int,
                  compute: shard_grid.ComputeRows,
                  describe: dict[str, dict], processes: shard_grid.Processes
                  ) -> dict[str, np.ndarray]:
    writers = {n: self.sharded_writer(keys[n], num_rows, shard_rows)
               for n in todo}
    first = writers[todo[0]]
    # A process checks only the shards of its own block: removing a damaged
    # shard of another's could race with that process saving it again.
    mine = shard_grid.process_shards(first.num_shards, processes)
    saved = sum(w.has(s) for w in writers.values() for s in mine)
    block = ""
    if processes.count > 1:
      block = (f"; process {processes.index} of {processes.count}: " + (
          f"shards {mine.start}-{mine.stop - 1}" if mine else "no shards"))
    logging.info("computing: %s [%s] (%d images in %d shard(s)%s%s)", what,
                 ", ".join(todo), num_rows, first.num_shards, block,
                 f"; resuming: {saved} of {len(mine) * len(todo)} "
                 "shard files already saved" if saved else "")
    progress = progress_lib.Progress(what, shard_grid.total_rows(
        map(first.shard_range, mine)))
    missing = [(s, tuple(n for n in todo if not writers[n].has(s)))
               for s in mine]
    progress.update(shard_grid.total_rows(
        first.shard_range(s) for s, names in missing if not names))
    # Consecutive shards that miss the same names are one stream: the
    # forward passes run on across shard boundaries, each shard saved as
    # its rows arrive.
    for names, group in itertools.groupby(
        [m for m in missing if m[1]], key=lambda m: m[1]):
      shards = [s for s, _ in group]
      ranges = [first.shard_range(s) for s in shards]
      for s, (start, stop), rows in zip(
          shards, ranges, compute(ranges, list(names)), strict=True):
        for n in names:
          writers[n].save(s, rows[n])
        progress.update(stop - start)
    progress.update(0, final=True)
    return self._join(keys, todo, writers, describe, processes, what)

  def _join(self, keys: dict[str, str], todo: list[str],
            writers: dict[str, "ShardedWriter"], describe: dict[str, dict],
            processes: shard_grid.Processes, what: str
            ) -> dict[str, np.ndarray]:
    """Joins the shards of `todo` (process 0, once every process saved its
    own, checking every shard and writing the entries' check records) and
    returns the entries."""
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

  def remove_orphans(self) -> list[str]:
    """Removes what killed processes left behind; returns the paths.

    That is: temporaries of dead writers (`files.remove_orphans`), shard
    directories of entries that are complete, and check or description
    records whose entry is gone. Entries locked by a live process are left
    alone.
    """
    removed = []
    for kind in _subdirs(self.root):
      kind_dir = os.path.join(self.root, kind)
      removed += files.remove_orphans(kind_dir)
      for name in os.listdir(kind_dir):
        if name.startswith(files.TEMP_PREFIX):
          continue  # Live writers' (dead ones' went above).
        path = os.path.join(kind_dir, name)
        key = f"{kind}/{name.split('.', 1)[0]}"
        if name.endswith(".parts"):
          removed += files.remove_orphans(path)
          with locks.lock_if_free(self.lock_path(key)) as free:
            if free and (os.path.exists(self.path(key))
                         or not os.listdir(path)):
              shutil.rmtree(path, ignore_errors=True)
              removed.append(path)
        elif (name.endswith((integrity.CHECK_SUFFIX, ".json"))
              and not name.endswith(".entry.json")
              and not os.path.exists(self.path(key))):
          with locks.lock_if_free(self.lock_path(key)) as free:
            if free and not os.path.exists(self.path(key)):
              with contextlib.suppress(FileNotFoundError):
                os.remove(path)
                removed.append(path)
    return removed


def _read_json_entry(path: str) -> tuple[str, Any]:
  """("ok", value), ("missing", None) or ("damaged", None)."""
  try:
    if not stat.S_ISREG(os.lstat(path).st_mode):
      return "damaged", None  # A directory or link where the file was.
    with open(path, "rb") as f:
      blob = f.read()
  except FileNotFoundError:
    return "missing", None
  except OSError:
    return "damaged", None
  head, _, body = blob.partition(b"\n")
  try:
    header = json.loads(head)
    if (isinstance(header, dict)
        and header.get("format") == integrity.JSON_HEADER
        and header.get("sha256") == hashlib.sha256(body).hexdigest()):
      return "ok", json.loads(body)
  except ValueError:
    pass
  return "damaged", None


def _remove_any(path: str) -> None:
  """Removes the file, link or directory at `path`, if any."""
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
  except FileNotFoundError:
    pass


def _save_checked(path: str, write: Callable[[str], Any]) -> None:
  """Writes a .npy file with write(tmp), records its check for `path`,
  then renames it to `path` (whatever was there, a directory too, goes)."""
  if os.path.lexists(path) and not os.path.isfile(path):
    _remove_any(path)
  with files.atomic_path(path) as tmp:
    write(tmp)
    record = integrity.write_check(tmp, record_for=path)
  integrity.forget(tmp)
  integrity.remember(path, record["checksum"])


def _subdirs(root: str) -> list[str]:
  try:
    return sorted(e.name for e in os.scandir(root)
                  if e.is_dir() and e.name != "locks"
                  and not e.name.startswith(files.TEMP_PREFIX))
  except OSError:
    return []


class ShardedWriter:
  """Builds a cache entry of `num_rows` rows from shards of `shard_rows`.

  Each finished shard is saved atomically under <key>.parts/ with its check
  record; `has()` checks a shard before it is trusted (a damaged one is
  logged, removed and computed again); `missing()` lists the shards still to
  compute, so a rerun after a crash only computes those; `finish()` joins
  them into the entry and removes the parts.
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
    part = self._part(shard)
    if not os.path.lexists(part):
      return False
    start, stop = self.shard_range(shard)
    reason = integrity.verify(part, checksum=self.cache.checksum)
    if reason is None:
      shape = integrity.npy_layout(part)[1]
      if shape[:1] != (stop - start,):
        reason = f"shape {shape}, expected {stop - start} rows"
    if reason is None:
      return True
    logging.warning("cache: damaged shard %s (%s); it is recomputed", part,
                    reason)
    for p in (part, integrity.check_path(part)):
      _remove_any(p)
    integrity.forget(part)
    return False

  def missing(self) -> list[int]:
    return [s for s in range(self.num_shards) if not self.has(s)]

  def save(self, shard: int, rows: np.ndarray) -> None:
    start, stop = self.shard_range(shard)
    if rows.shape[0] != stop - start:
      raise ValueError(f"shard {shard} of {self.key} must have "
                       f"{stop - start} rows, got {rows.shape[0]}")
    _save_checked(self._part(shard), lambda tmp: files.save_npy(tmp, rows))

  def _join(self, path: str) -> None:
    first = np.load(self._part(0), mmap_mode="r")
    with files.atomic_path(path) as tmp:
      out = np.lib.format.open_memmap(
          tmp, mode="w+", dtype=first.dtype,
          shape=(self.num_rows,) + first.shape[1:])
      for s in range(self.num_shards):
        start, stop = self.shard_range(s)
        out[start:stop] = np.load(self._part(s), mmap_mode="r")
      out.flush()
      del out

  def finish(self, describe: dict[str, Any] | None = None) -> np.ndarray:
    """Joins the shards into the entry (streamed to disk) and returns it."""
    if not self.cache.has(self.key):  # Else another process finished it.
      missing = self.missing()
      if missing:
        raise RuntimeError(f"{self.key}: shards {missing} were never saved")
      path = self.cache.save_with(self.key, self._join, describe)
      logging.debug("cache: wrote %s", path)
    shutil.rmtree(self.parts_dir, ignore_errors=True)
    return self.cache.load(self.key)
