"""Content-addressed cache: keys, atomic writes, resumable shards."""

import json
import os

import numpy as np
import pytest

from jax_dissect.store import cache as cache_lib
from jax_dissect.store import files
from jax_dissect.store import integrity
from jax_dissect.store import shard_grid


def test_keys_depend_on_every_part(tmp_path):
  c = cache_lib.ArrayCache(str(tmp_path))
  base = dict(model="resnet18", layer="layer4", ids=["a", "b"])
  k = c.key("activations", **base)
  assert k == c.key("activations", **dict(base))
  assert k != c.key("activations", **{**base, "layer": "layer3"})
  assert k != c.key("activations", **{**base, "ids": ["b", "a"]})
  assert k != c.key("image_embeddings", **base)
  arr = np.arange(6, dtype=np.float32)
  changed = arr.copy()
  changed[3] = 7
  assert c.key("x", w=arr) != c.key("x", w=changed)
  assert c.key("x", w=arr) == c.key("x", w=arr.copy())


def test_save_load_roundtrip_and_metadata(tmp_path):
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("p", n=1)
  assert not c.has(key)
  x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
  c.save(key, x, {"what": "test"})
  assert c.has(key)
  np.testing.assert_array_equal(c.load(key), x)
  assert os.path.exists(os.path.join(str(tmp_path), key + ".json"))


def test_json_entries_and_rows_resume(tmp_path):
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("labels", layer="x")
  assert c.load_json(key) is None
  c.save_json(key, {"a": [1, 2]})
  assert c.load_json(key) == {"a": [1, 2]}
  full = np.arange(25 * 3, dtype=np.float32).reshape(25, 3)
  keys = {"x": c.key("acts", n=1), "y": c.key("acts", n=2)}

  class Killed(Exception):
    pass

  def killed_after_one_shard(start, stop, names):
    if start > 0:
      raise Killed  # A kill after the first shard.
    return {n: full[start:stop] for n in names}

  with pytest.raises(Killed):
    c.rows(keys, "test", 25, 10,
           shard_grid.per_shard(killed_after_one_shard))
  calls = []

  def compute(start, stop, names):
    calls.append((start, stop))
    return {n: full[start:stop] for n in names}

  out = c.rows(keys, "test", 25, 10, shard_grid.per_shard(compute))
  # The rerun computes only the shards that were not saved.
  assert calls == [(10, 20), (20, 25)]
  for n in keys:
    np.testing.assert_array_equal(out[n], full)
  calls.clear()
  c.rows(keys, "test", 25, 10,
         shard_grid.per_shard(compute))  # All cache hits now.
  assert calls == []


def test_sharded_writer_resumes(tmp_path):
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("acts", n=2)
  full = np.arange(23 * 2, dtype=np.float32).reshape(23, 2)
  w = c.sharded_writer(key, 23, 10)
  assert w.num_shards == 3 and w.missing() == [0, 1, 2]
  w.save(0, full[:10])
  # A new writer (a new run) sees the saved shard.
  w2 = c.sharded_writer(key, 23, 10)
  assert w2.missing() == [1, 2]
  with pytest.raises(RuntimeError, match="never saved"):
    w2.finish()
  w2.save(1, full[10:20])
  w2.save(2, full[20:])
  with pytest.raises(ValueError, match="must have 3 rows"):
    w2.save(2, full[:5])
  out = w2.finish()
  np.testing.assert_array_equal(out, full)
  assert c.has(key) and not os.path.exists(w2.parts_dir)


def _damage(path, how):
  """Damages a file: 'truncate' it, or 'flip' bytes in place keeping its
  size and mtime (as a disk error or a stray write would)."""
  st = os.stat(path)
  if how == "truncate":
    with open(path, "r+b") as f:
      f.truncate(st.st_size - 8)
  else:
    with open(path, "r+b") as f:
      f.seek(-16, os.SEEK_END)
      data = f.read(8)
      f.seek(-16, os.SEEK_END)
      f.write(bytes(b ^ 0xFF for b in data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
  assert os.path.getsize(path) == st.st_size - (8 if how == "truncate" else 0)


@pytest.mark.parametrize("how", ["truncate", "flip"])
def test_damaged_entry_is_logged_and_not_served(tmp_path, how, caplog):
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("acts", n=1)
  x = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
  c.save(key, x)
  assert c.has(key)
  _damage(c.path(key), how)
  with pytest.raises(integrity.DamagedEntryError, match=c.path(key)):
    c.load(key)
  caplog.set_level("WARNING")
  # A new process (a fresh verification) sees it; so does this one, whose
  # verification of the old file no longer matches the file's stat.
  integrity.forget(c.path(key))
  assert not c.has(key)
  assert any(c.path(key) in r.getMessage() and "damaged" in r.getMessage()
             for r in caplog.records)
  assert not os.path.exists(c.path(key))  # Removed, to be recomputed.
  c.save(key, x)
  np.testing.assert_array_equal(c.load(key), x)


def test_header_mode_checks_size_and_header_only(tmp_path):
  c = cache_lib.ArrayCache(str(tmp_path), verify="header")
  key = c.key("acts", n=1)
  c.save(key, np.ones((10, 4), np.float32))
  _damage(c.path(key), "flip")
  integrity.forget(c.path(key))
  assert c.has(key)  # Same size and header: not read.
  _damage(c.path(key), "truncate")
  assert not c.has(key)
  with pytest.raises(ValueError, match="cache_verify='crc'"):
    cache_lib.ArrayCache(str(tmp_path), verify="crc")


@pytest.mark.parametrize("how", ["sound", "flip"])
def test_an_entry_without_its_record_is_recomputed_never_served(tmp_path,
                                                                how):
  """Issue 25: an entry whose check record was deleted (and whose bytes
  were flipped) was served as a hit and re-certified with a new record.
  Nothing vouches for such bytes: the entry is removed and recomputed,
  and no record is written for it."""
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("acts", n=1)
  x = np.random.default_rng(0).normal(size=(50, 20)).astype(np.float32)
  c.save(key, x)
  os.remove(integrity.check_path(c.path(key)))
  if how == "flip":
    _damage(c.path(key), "flip")
  integrity.forget(c.path(key))
  assert not c.has(key)
  assert not os.path.exists(c.path(key))
  assert not os.path.exists(integrity.check_path(c.path(key)))
  with pytest.raises(integrity.DamagedEntryError, match="no check record"):
    np.save(c.path(key), x)  # A file put there by hand is not served.
    integrity.load_verified(c.path(key))
  computed = []
  out = c.rows({"a": key}, "acts", 50, 20,
               shard_grid.per_shard(lambda s, e, n: (
                   computed.append(s) or {"a": x[s:e]})))["a"]
  assert computed == [0, 20, 40]
  np.testing.assert_array_equal(out, x)
  assert integrity.verify(c.path(key)) is None


def test_the_record_is_written_before_the_entry(tmp_path, monkeypatch):
  """A crash between the two writes leaves a record without an entry
  (cleaned up), never an entry without a record."""
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("acts", n=1)
  real = os.replace

  def crash(src, dst):
    if dst == c.path(key):
      raise KeyboardInterrupt("killed")
    return real(src, dst)

  monkeypatch.setattr(os, "replace", crash)
  with pytest.raises(KeyboardInterrupt):
    c.save(key, np.ones((3, 2), np.float32))
  monkeypatch.setattr(os, "replace", real)
  assert not os.path.exists(c.path(key))
  assert not c.has(key)


@pytest.mark.parametrize("what", ["entry", "json", "shard"])
def test_a_directory_where_an_entry_was_is_removed_and_recomputed(
    tmp_path, what):
  """Issue 25: a cache file replaced by a directory was 'recomputed' and
  the save then stopped with `Is a directory`."""
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("acts", n=1)
  x = np.arange(40.0, dtype=np.float32).reshape(10, 4)
  if what == "json":
    c.save_json(key, {"v": 1})
    os.remove(c.json_path(key))
    os.makedirs(os.path.join(c.json_path(key), "sub"))
    assert c.load_json(key) is None
    c.save_json(key, {"v": 2})
    assert c.load_json(key) == {"v": 2}
    return
  if what == "entry":
    c.save(key, x)
    os.remove(c.path(key))
    os.makedirs(os.path.join(c.path(key), "sub"))
  else:
    w = c.sharded_writer(key, 10, 5)
    w.save(0, x[:5])
    os.remove(w._part(0))  # pylint: disable=protected-access
    os.makedirs(w._part(0))  # pylint: disable=protected-access
  out = c.rows({"a": key}, "acts", 10, 5, shard_grid.per_shard(
      lambda s, e, n: {"a": x[s:e]}))["a"]
  np.testing.assert_array_equal(out, x)
  assert os.path.isfile(c.path(key)) and c.has(key)


@pytest.mark.parametrize("how", ["truncate", "flip", "edit"])
def test_damaged_json_entry_is_recomputed(tmp_path, how, caplog):
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("labels", layer="x")
  c.save_json(key, {"values": [[0.5, 0.25]], "concepts": [[3, 1]]})
  path = c.json_path(key)
  if how == "edit":  # A user edits the cached labels by hand.
    text = open(path, encoding="utf-8").read()
    open(path, "w", encoding="utf-8").write(text.replace("[3, 1]", "[1, 3]"))
  else:
    _damage(path, how)
  caplog.set_level("WARNING")
  assert c.load_json(key) is None
  assert any(path in r.getMessage() for r in caplog.records)
  # Files of the old format (no checksum line) are recomputed too.
  with open(path, "w", encoding="utf-8") as f:
    json.dump({"values": []}, f)
  assert c.load_json(key) is None


@pytest.mark.parametrize("how", ["truncate", "flip", "delete_record"])
def test_damaged_shard_is_recomputed_on_resume(tmp_path, how):
  c = cache_lib.ArrayCache(str(tmp_path))
  full = np.arange(25 * 3, dtype=np.float32).reshape(25, 3)
  keys = {"x": c.key("acts", n=1)}

  class Killed(Exception):
    pass

  def killed_after_two_shards(start, stop, names):
    if start >= 20:
      raise Killed
    return {n: full[start:stop] for n in names}

  with pytest.raises(Killed):
    c.rows(keys, "test", 25, 10,
           shard_grid.per_shard(killed_after_two_shards))
  part = c.sharded_writer(keys["x"], 25, 10)._part(1)  # pylint: disable=protected-access
  if how == "delete_record":  # Nothing vouches for it: recomputed too.
    os.remove(integrity.check_path(part))
  else:
    _damage(part, how)
  integrity.forget(part)
  calls = []

  def compute(start, stop, names):
    calls.append(start)
    return {n: full[start:stop] for n in names}

  out = c.rows(keys, "test", 25, 10, shard_grid.per_shard(compute))
  np.testing.assert_array_equal(out["x"], full)
  assert calls == [10, 20]


def test_shards_of_another_shard_size_are_recomputed(tmp_path):
  c = cache_lib.ArrayCache(str(tmp_path))
  full = np.arange(20 * 2, dtype=np.float32).reshape(20, 2)
  w = c.sharded_writer(c.key("acts", n=3), 20, 5)
  w.save(1, full[5:10])  # Rows 5..9 saved by a run with shard_images=5.
  w8 = c.sharded_writer(c.key("acts", n=3), 20, 8)
  assert not w8.has(1)  # Shard 1 of 8 rows is rows 8..15.


def test_orphans_of_killed_writers_are_removed(tmp_path):
  """Temporaries of dead writers, stale shard directories and records
  without their entry go; a live writer's temporary stays."""
  import fcntl  # pylint: disable=g-import-not-at-top
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("acts", n=1)
  c.save(key, np.zeros((4, 2), np.float32))
  kind_dir = os.path.dirname(c.path(key))
  dead = os.path.join(kind_dir, ".tmp-dead.npy")
  live = os.path.join(kind_dir, ".tmp-live.npy")
  for p in (dead, live):
    open(p, "wb").write(b"partial")
    os.utime(p, (1, 1))  # Old enough.
  holder = os.open(live, os.O_RDONLY)
  fcntl.flock(holder, fcntl.LOCK_EX)
  stale_parts = c.path(key)[:-4] + ".parts"
  os.makedirs(stale_parts)
  np.save(os.path.join(stale_parts, "000000.npy"), np.zeros(2))
  lone_record = os.path.join(kind_dir, "0" * 40 + integrity.CHECK_SUFFIX)
  open(lone_record, "w").write("{}")
  try:
    cache_lib.ArrayCache(str(tmp_path))
    assert not os.path.exists(dead) and os.path.exists(live)
    assert not os.path.exists(stale_parts)
    assert not os.path.exists(lone_record)
    assert c.has(key)
  finally:
    os.close(holder)


def _build_in_another_process(root, log):
  """Builds entry 'shared' with a slow compute, logging each call."""
  c = cache_lib.ArrayCache(root)

  def compute(start, stop, names):
    with open(log, "a") as f:
      f.write(f"{os.getpid()} {start}\n")
    import time  # pylint: disable=g-import-not-at-top
    time.sleep(0.2)
    return {n: np.full((stop - start, 2), start, np.float32) for n in names}

  out = c.rows({"x": c.key("acts", name="shared")}, "test", 8, 2,
               shard_grid.per_shard(compute))
  return np.asarray(out["x"]).tolist()


def test_second_process_waits_for_the_first_and_reuses_its_entry(tmp_path):
  import multiprocessing  # pylint: disable=g-import-not-at-top
  log = str(tmp_path / "calls.txt")
  ctx = multiprocessing.get_context("spawn")
  with ctx.Pool(2) as pool:
    outs = pool.starmap(_build_in_another_process,
                        [(str(tmp_path / "cache"), log)] * 2)
  assert outs[0] == outs[1]
  calls = open(log).read().split("\n")[:-1]
  assert len(calls) == 4, calls  # 4 shards, computed once, by one process.
  assert len({c.split()[0] for c in calls}) == 1


def test_opening_a_cache_leaves_live_writers_temporaries(tmp_path):
  """A second process opening the cache while the first writes a record or
  a JSON entry keeps the first one's temporary (a race the concurrent-runs
  test found: the temporary was taken for a record without its entry)."""
  c = cache_lib.ArrayCache(str(tmp_path))
  for name in ("x.check.json", "x.json", "x.entry.json", "x.npy"):
    with files.atomic_path(tmp_path / "labels" / name) as tmp:
      open(tmp, "w").write("{}")
      cache_lib.ArrayCache(str(tmp_path))
      assert os.path.exists(tmp), name
  del c


def test_consecutive_missing_shards_are_one_stream(tmp_path):
  c = cache_lib.ArrayCache(str(tmp_path))
  full = np.arange(25 * 2, dtype=np.float32).reshape(25, 2)
  keys = {"x": c.key("acts", n=1), "y": c.key("acts", n=2)}
  c.sharded_writer(keys["y"], 25, 5).save(2, full[10:15])  # Left by a kill.
  calls = []

  def compute(ranges, names):
    calls.append((list(ranges), list(names)))
    # Batches of 3 rows that never span two shards, as the loader makes.
    batches = ({n: full[b:min(b + 3, stop)] for n in names}
               for start, stop in ranges for b in range(start, stop, 3))
    return shard_grid.rows_by_range(batches, ranges)

  out = c.rows(keys, "test", 25, 5, compute)
  # Shard 2 misses only x: the stream breaks there and nowhere else.
  assert calls == [([(0, 5), (5, 10)], ["x", "y"]), ([(10, 15)], ["x"]),
                   ([(15, 20), (20, 25)], ["x", "y"])]
  for n in keys:
    np.testing.assert_array_equal(out[n], full)


def test_rows_by_range_checks_the_batches():
  batches = [{"a": np.zeros((3, 1))}, {"a": np.zeros((2, 1))}]
  got = list(shard_grid.rows_by_range(iter(batches), [(0, 3), (3, 5)]))
  assert [g["a"].shape for g in got] == [(3, 1), (2, 1)]
  with pytest.raises(ValueError, match="spans the end of range"):
    list(shard_grid.rows_by_range(iter(batches), [(0, 2), (2, 5)]))
  with pytest.raises(ValueError, match="ended at row 5"):
    list(shard_grid.rows_by_range(iter(batches), [(0, 6)]))
  with pytest.raises(ValueError, match="more batches"):
    list(shard_grid.rows_by_range(iter(batches), [(0, 3)]))
