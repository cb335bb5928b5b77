"""Locks shared between processes (flock) and threads (an RLock per file).

A process builds a cache entry only while it holds the entry's lock file;
a second process that wants the entry waits and then reads it. Lock files
are never removed (deleting one while another process waits on it would let
two processes hold "the" lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from typing import Iterator

from absl import logging


class _FileLock:

  def __init__(self):
    self.thread_lock = threading.RLock()
    self.fd: int | None = None
    self.depth = 0


_LOCKS: dict[str, _FileLock] = {}
_LOCKS_GUARD = threading.Lock()
_WARNED_NO_LOCKS = []


@contextlib.contextmanager
def file_lock(path: str, what: str = "") -> Iterator[None]:
  """Holds an exclusive lock on lock file `path` (re-entrant per thread).

  Waits (saying so in the log) while another process or thread holds it.
  Where the file system has no locks, warns once and goes on unlocked:
  entries stay whole (atomic renames), only work may be done twice.
  """
  with _LOCKS_GUARD:
    lock = _LOCKS.setdefault(path, _FileLock())
  with lock.thread_lock:
    if lock.depth == 0:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        logging.info("cache: waiting for another process to finish %s",
                     what or path)
        fcntl.flock(fd, fcntl.LOCK_EX)
      except OSError as e:
        if not _WARNED_NO_LOCKS:
          _WARNED_NO_LOCKS.append(path)
          logging.warning("cache: cannot lock %s (%s); going on without "
                          "locks", path, e)
      lock.fd = fd
    lock.depth += 1
    try:
      yield
    finally:
      lock.depth -= 1
      if lock.depth == 0:
        os.close(lock.fd)  # Releases the flock.
        lock.fd = None


@contextlib.contextmanager
def lock_if_free(path: str) -> Iterator[bool]:
  """Holds lock file `path` if no one does (without waiting); yields that."""
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  except OSError:
    yield False
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      got = True
    except OSError:
      got = False
    yield got
  finally:
    os.close(fd)
