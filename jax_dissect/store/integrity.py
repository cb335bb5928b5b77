"""Integrity of cached files: content fingerprints and check records.

`fingerprint` makes the cache's content keys. Every .npy entry has a check
record beside it (`<key>.check.json`: size, dtype, shape and a CRC-32 of the
file), written before the entry is renamed into place; `verify` compares a
file with its header and its record (the CRC on the first use of a file
version in a process), so a truncated, flipped or edited entry is found and
never served. A file without a record, or that is not a regular file (a
directory, a symlink), fails the check: nothing vouches for its bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import threading
from typing import Any
import zlib

import numpy as np

from jax_dissect.store import files

VERIFY_MODES = ("checksum", "header")
CHECK_SUFFIX = ".check.json"
_CHECK_FORMAT = 1
JSON_HEADER = "jax_dissect-cache-json"
_CHUNK_BYTES = 16 << 20


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


# ----------------------------------------------------------------------------
# Integrity of .npy files.
# ----------------------------------------------------------------------------


class DamagedEntryError(ValueError):
  """A cached file fails its integrity check."""


def file_checksum(path: str) -> str:
  """CRC-32 of a file's bytes, as 8 hex digits (read in 16 MB blocks)."""
  crc = 0
  buf = bytearray(_CHUNK_BYTES)
  view = memoryview(buf)
  with open(path, "rb", buffering=0) as f:
    while n := f.readinto(buf):
      crc = zlib.crc32(view[:n], crc)
  return f"{crc:08x}"


def npy_layout(path: str) -> tuple[np.dtype, tuple[int, ...], int]:
  """(dtype, shape, expected file size) from a .npy file's header.

  Raises:
    ValueError: the file is not a readable .npy file of plain numbers.
  """
  with open(path, "rb") as f:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
      shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
      shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:
      raise ValueError(f"unsupported .npy format version {version}")
    offset = f.tell()
  if dtype.hasobject:
    raise ValueError("it holds Python objects (pickles), not numbers")
  return dtype, tuple(shape), offset + int(np.prod(shape)) * dtype.itemsize


def check_path(path: str) -> str:
  """Where the check record of the .npy file `path` is kept."""
  return os.path.splitext(path)[0] + CHECK_SUFFIX


# Files verified in this process: path -> (stat signature, CRC of the bytes).
_VERIFIED: dict[str, tuple[tuple[int, ...], str]] = {}
_VERIFIED_GUARD = threading.Lock()


def _signature(st: os.stat_result) -> tuple[int, ...]:
  # ctime changes on every write and metadata change and cannot be set back.
  return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _actual_checksum(path: str, st: os.stat_result) -> str:
  sig = _signature(st)
  with _VERIFIED_GUARD:
    known = _VERIFIED.get(path)
  if known and known[0] == sig:
    return known[1]
  crc = file_checksum(path)
  with _VERIFIED_GUARD:
    _VERIFIED[path] = (sig, crc)
  return crc


def forget(path: str) -> None:
  """Drops what this process knows of `path`'s checksum."""
  with _VERIFIED_GUARD:
    _VERIFIED.pop(os.path.abspath(path), None)


def check_record(path: str) -> dict[str, Any]:
  """The check record of .npy file `path`: size, dtype, shape and CRC."""
  path = os.path.abspath(path)
  dtype, shape, _ = npy_layout(path)
  st = os.stat(path)
  return {"format": _CHECK_FORMAT, "algorithm": "crc32",
          "checksum": _actual_checksum(path, st), "size": st.st_size,
          "dtype": dtype.str, "shape": list(shape)}


def write_check(path: str, record_for: str | None = None
                ) -> dict[str, Any]:
  """Records the size, dtype, shape and CRC of .npy file `path`.

  Args:
    path: the file whose bytes are recorded.
    record_for: the path the record is for, when `path` is a temporary
      that will be renamed to it (the record is written first, so an entry
      never exists without its record); default `path`.
  """
  record = check_record(path)
  files.write_text(check_path(record_for or path), json.dumps(record))
  return record


def remember(path: str, checksum: str) -> None:
  """Tells this process that file `path`, as it is now, has CRC `checksum`
  (its writer just recorded it), so its first read needs no second pass."""
  path = os.path.abspath(path)
  with contextlib.suppress(OSError):
    sig = _signature(os.stat(path))
    with _VERIFIED_GUARD:
      _VERIFIED[path] = (sig, checksum)


def _read_check(path: str) -> dict[str, Any] | None:
  try:
    with open(check_path(path), encoding="utf-8") as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    return {"unreadable": str(e)}
  return record if isinstance(record, dict) else {"unreadable": "not a dict"}


def verify(path: str, *, checksum: bool = True) -> str | None:
  """Why the .npy file `path` is damaged, or None if it is sound.

  The file's size and header are compared with its check record (and with
  each other); with `checksum`, also its CRC (computed once per process and
  file version). A file without a record is not sound (nothing vouches for
  its bytes: it is recomputed, never served or adopted), nor is anything
  that is not a regular file.

  Args:
    path: a .npy file.
    checksum: compare the CRC as well.

  Returns:
    None, or a short reason ("missing", "no check record", "size 100,
    recorded 200", ...).
  """
  path = os.path.abspath(path)
  try:
    st = os.lstat(path)
  except FileNotFoundError:
    return "missing"
  except OSError as e:
    return f"unreadable ({e.strerror})"
  if not stat.S_ISREG(st.st_mode):
    return "not a regular file"
  try:
    dtype, shape, expected_size = npy_layout(path)
  except (OSError, ValueError, SyntaxError) as e:
    return f"unreadable .npy header: {e}"
  if st.st_size != expected_size:
    return (f"size {st.st_size} bytes, its header needs {expected_size} "
            "(truncated or extended)")
  record = _read_check(path)
  if record is None:
    return "no check record"
  if "unreadable" in record or record.get("format") != _CHECK_FORMAT:
    return f"unreadable check record {check_path(path)}"
  if record.get("size") != st.st_size:
    return f"size {st.st_size} bytes, recorded {record.get('size')}"
  if record.get("dtype") != dtype.str or record.get("shape") != list(shape):
    return (f"header {dtype.str}{list(shape)}, recorded "
            f"{record.get('dtype')}{record.get('shape')}")
  if checksum:
    actual = _actual_checksum(path, st)
    if actual != record.get("checksum"):
      return (f"CRC-32 {actual}, recorded {record.get('checksum')} (its "
              "bytes changed)")
  return None


def load_verified(path: str, *, checksum: bool = True,
                  mmap: bool = True) -> np.ndarray:
  """Loads a cached .npy file after `verify`; DamagedEntryError if damaged."""
  reason = verify(path, checksum=checksum)
  if reason is not None:
    raise DamagedEntryError(f"cached array {path} is damaged ({reason}); "
                            "rerun describe_neurons to recompute it")
  return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
