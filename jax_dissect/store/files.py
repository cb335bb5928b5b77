"""Atomic file writes: a reader sees the whole old file or the whole new one.

Every file jax_dissect writes (results, analysis outputs, cache entries) goes
through `atomic_path`: the content is written to a uniquely named temporary
file in the destination directory, flushed to disk, and renamed over the
destination, so a crash or a concurrent writer never leaves a partial file.
Files get the permissions of an ordinary `open()` (0666 minus the process
umask, e.g. 0644), not the 0600 of a bare temporary file, so a group can read
a shared results directory or cache.

A temporary is named `.tmp-*` and its writer holds an exclusive `flock` on
it until the rename, so a temporary whose lock can be taken belongs to a
process that died (kill -9, power loss): `remove_orphans` deletes those.

A failed write (a full disk, a read-only directory) raises an OSError that
names the file it was writing, never a temporary's name or none. A
directory of files that belong together (a run's results) is built in a
temporary sibling and swapped in whole (`replace_dir`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import contextlib
import csv
import ctypes
import errno
import fcntl
import io
import json
import os
import shutil
import tempfile
import time
from typing import Any, Iterator
import uuid

from absl import logging
import numpy as np

TEMP_PREFIX = ".tmp-"


def _umask() -> int:
  # os.umask can only be read by setting it; restore it at once.
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _try_flock(fd: int) -> bool:
  """Takes an exclusive flock on `fd` without waiting; False if held.

  Where the file system has no locks (ENOLCK, EOPNOTSUPP...) it is False
  too: nothing can then tell a live writer from a dead one.
  """
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return True
  except OSError:
    return False


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary path; on success it is renamed to `path`.

  The caller writes the temporary file (any way it likes); on leaving the
  block without an exception the file is fsynced, given the umask's
  permissions and renamed to `path`. On an exception it is removed. The
  temporary is unique (two writers never share one) and locked while it
  is written (see `remove_orphans`).
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX,
                               suffix=os.path.splitext(path)[1])
  except OSError as e:
    raise naming(e, path) from None
  try:
    _try_flock(fd)
    yield tmp
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
  except OSError as e:
    raise naming(e, path, tmp) from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
    os.close(fd)


def naming(error: OSError, path: str, *temporaries: str) -> OSError:
  """`error` as an OSError naming `path` when it names no file or names
  one of `temporaries` (a write's own temporary files), else itself.

  So a full disk reads "[Errno 28] No space left on device: '<path>'", the
  file the user knows, not a temporary's name or nothing.
  """
  name = error.filename
  if name is not None:
    name = os.fspath(name)
    temp = next((t for t in temporaries if t and name.startswith(t)), None)
    if temp is None:
      return error
    rest = name[len(temp):]  # A file inside a temporary directory.
    if rest.startswith(os.sep):
      path = os.fspath(path) + rest
  if error.errno is None:
    return OSError(f"cannot write {os.fspath(path)!r}: {error}")
  # OSError(errno, ...) is the errno's subclass (FileNotFoundError...).
  return OSError(error.errno, error.strerror or str(error), os.fspath(path))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[str]:
  """Yields a temporary directory that becomes `path` as a whole.

  The caller fills the directory; on leaving the block it gets the umask's
  permissions and is renamed to `path`. If `path` exists by then (another
  process finished first), the temporary is removed and `path` kept. On an
  exception the temporary is removed.
  """
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  try:
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=TEMP_PREFIX)
  except OSError as e:
    raise naming(e, path) from None
  fd = os.open(tmp, os.O_RDONLY)
  try:
    _try_flock(fd)
    yield tmp
    os.chmod(tmp, 0o777 & ~_umask())
    try:
      os.rename(tmp, path)
    except OSError as e:  # Another process made `path` first: keep it.
      if e.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not (
          os.path.isdir(path)):
        raise
  except OSError as e:
    raise naming(e, path, tmp) from None
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    os.close(fd)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
  """Swaps directories `a` and `b` atomically (Linux renameat2
  RENAME_EXCHANGE); False where the system or file system lacks it."""
  try:
    renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False
  if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b),
               _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
    return False
  raise OSError(err, os.strerror(err), b)


def _fsync_dir(path: str) -> None:
  with contextlib.suppress(OSError):
    fd = os.open(path, os.O_RDONLY)
    try:
      os.fsync(fd)
    finally:
      os.close(fd)


def _stale_siblings(parent: str, prefix: str,
                    carry: Callable[[str], bool]) -> None:
  """Removes what dead writers of `replace_dir` left in `parent`: their
  temporaries, unless one holds an entry `carry` keeps (the user's files,
  caught mid-move): those are only named in a warning, never deleted."""
  try:
    names = [n for n in os.listdir(parent) if n.startswith(prefix)]
  except OSError:
    return
  now = time.time()
  for name in names:
    path = os.path.join(parent, name)
    try:
      fd = os.open(path, os.O_RDONLY)
    except OSError:
      continue
    try:
      if not _try_flock(fd) or now - os.fstat(fd).st_mtime < 1.0:
        continue
      if any(carry(n) for n in os.listdir(path)):
        logging.warning("%s was left by a killed write of %s and holds "
                        "files of yours; move them back and delete it",
                        path, parent)
        continue
      shutil.rmtree(path, ignore_errors=True)
    except OSError:
      continue
    finally:
      os.close(fd)


@contextlib.contextmanager
def replace_dir(path: str | os.PathLike, carry: Callable[[str], bool]
                ) -> Iterator[str]:
  """Yields a temporary sibling directory that then replaces `path` whole.

  The caller fills the directory. On leaving the block without an
  exception it becomes `path` at once: renamed to it when `path` is
  missing or empty, else exchanged with it atomically (renameat2's
  RENAME_EXCHANGE; where the file system lacks it, two renames, between
  which `path` is briefly missing but the old directory is whole beside
  it). Then the entries of the old directory for which `carry(name)` is
  true (files that are not part of what is replaced) are moved into the
  new one and the rest of the old directory is removed. On an exception
  (a full disk...) the temporary is removed and `path` is untouched, so a
  reader sees the old directory whole or the new one whole.

  Args:
    path: the directory to replace (created if missing).
    carry: which names of the old directory to keep.

  Yields:
    The temporary directory to fill.

  Raises:
    OSError: naming `path`.
  """
  path = os.path.realpath(os.fspath(path))
  parent, base = os.path.split(path)
  prefix = f"{TEMP_PREFIX}{base}-"
  try:
    os.makedirs(parent, exist_ok=True)
    _stale_siblings(parent, prefix, carry)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
  except OSError as e:
    raise naming(e, path) from None
  fd = os.open(tmp, os.O_RDONLY)
  old_fd = None
  swapped = False  # The old directory may now be at `tmp`: keep it.
  try:
    _try_flock(fd)
    yield tmp
    os.chmod(tmp, 0o777 & ~_umask())
    if os.path.lexists(path) and not os.path.isdir(path):
      raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
    if not os.path.isdir(path) or not os.listdir(path):
      os.rename(tmp, path)  # Replaces an empty directory too.
      old = None
    else:
      old_fd = os.open(path, os.O_RDONLY)
      _try_flock(old_fd)  # Not a dead writer's: keep cleaners away.
      if _exchange(tmp, path):
        old, swapped = tmp, True
      else:
        old = os.path.join(parent, f"{prefix}old-{uuid.uuid4().hex[:8]}")
        os.rename(path, old)
        try:
          os.rename(tmp, path)
        except OSError:
          os.rename(old, path)
          raise
        swapped = True
    _fsync_dir(parent)
    if old is not None:
      for name in sorted(os.listdir(old)):
        if carry(name):
          os.rename(os.path.join(old, name), os.path.join(path, name))
      shutil.rmtree(old, ignore_errors=True)
  except OSError as e:
    raise naming(e, path, tmp) from None
  finally:
    if not swapped and os.path.exists(tmp):
      shutil.rmtree(tmp, ignore_errors=True)
    os.close(fd)
    if old_fd is not None:
      os.close(old_fd)


def remove_orphans(directory: str | os.PathLike, min_age_s: float = 1.0
                   ) -> list[str]:
  """Removes the temporaries of dead writers in `directory`; returns them.

  A temporary (`.tmp-*`, file or directory) is an orphan when its lock can
  be taken, i.e. the process that wrote it is gone, and it is older than
  `min_age_s` (a temporary is locked a moment after it is created).
  """
  removed = []
  try:
    names = os.listdir(directory)
  except OSError:
    return removed
  now = time.time()
  for name in names:
    if not name.startswith(TEMP_PREFIX):
      continue
    path = os.path.join(os.fspath(directory), name)
    try:
      fd = os.open(path, os.O_RDONLY)
    except OSError:
      continue  # Renamed or removed meanwhile.
    try:
      if not _try_flock(fd) or now - os.fstat(fd).st_mtime < min_age_s:
        continue
      if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
      else:
        os.remove(path)
      removed.append(path)
    except OSError:
      continue
    finally:
      os.close(fd)
  return removed


def check_writable_dir(path: str | os.PathLike, option: str) -> str:
  """Checks that directory `path` exists or can be made, and is writable.

  Nothing is created: the nearest existing ancestor is tested instead of a
  missing directory (with an unnamed temporary file).

  Args:
    path: the directory.
    option: the option's name, for the message.

  Returns:
    The absolute path.

  Raises:
    ValueError: one line naming the option, the path and why.
  """
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if os.path.exists(path) and not os.path.isdir(path):
    raise ValueError(f"{option}={path!r} is a file, not a directory")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f"{option}={path!r} cannot be created: {existing!r} is "
                     "a file, not a directory")
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    what = "is not writable" if existing == path else (
        f"cannot be created in {existing!r}")
    raise ValueError(f"{option}={path!r} {what}: "
                     f"{e.strerror or type(e).__name__}") from None
  return path


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
  """Writes `data` to `path` atomically; returns the path."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
  return os.fspath(path)


def write_text(path: str | os.PathLike, text: str) -> str:
  """Writes UTF-8 `text` to `path` atomically; returns the path."""
  return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1
               ) -> str:
  """Writes `obj` as JSON atomically (numpy scalars become numbers)."""
  return write_text(path, json.dumps(obj, indent=indent, default=_to_json)
                    + "\n")


def _to_json(x: Any) -> Any:
  if isinstance(x, (np.integer, np.floating, np.bool_)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


def csv_text(rows: Iterable[Mapping[str, Any]],
             fields: Sequence[str] | None = None) -> str:
  """Rows of dicts as CSV text; columns are `fields` or all keys in order.

  Floats are written with repr precision; None is an empty cell.
  """
  rows = list(rows)
  if fields is None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
  buf = io.StringIO(newline="")
  writer = csv.DictWriter(buf, fieldnames=list(fields), restval="",
                          extrasaction="raise", lineterminator="\r\n")
  writer.writeheader()
  for r in rows:
    writer.writerow({k: _cell(v) for k, v in r.items()})
  return buf.getvalue()


def _cell(v: Any) -> Any:
  if v is None:
    return ""
  if isinstance(v, (np.integer, np.floating, np.bool_)):
    return v.item()
  if isinstance(v, (list, tuple)):
    return json.dumps(v, default=_to_json)
  return v


def write_csv(path: str | os.PathLike, rows: Iterable[Mapping[str, Any]],
              fields: Sequence[str] | None = None) -> str:
  """Writes rows of dicts as a CSV file atomically; returns the path."""
  return write_text(path, csv_text(rows, fields))


def save_npy(path: str | os.PathLike, array: np.ndarray) -> str:
  """Saves an array as .npy atomically (no pickles); returns the path."""
  with atomic_path(path) as tmp:
    np.save(tmp, np.asarray(array), allow_pickle=False)
  return os.fspath(path)


def write_with(path: str | os.PathLike, write: Callable[[str], Any]) -> str:
  """Calls write(tmp_path) and renames the result to `path` atomically.

  For writers that take a file name (matplotlib's savefig, np.save...).
  """
  with atomic_path(path) as tmp:
    write(tmp)
  return os.fspath(path)
