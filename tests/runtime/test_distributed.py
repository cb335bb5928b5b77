"""Processes of a run (one, in these tests) and the cache's process split.

Two real processes are started in tests/test_multiprocess.py; here the
split of ArrayCache.rows is shown with two threads standing for them.
"""

import os
import threading

import numpy as np
import pytest

from jax_dissect.runtime import distributed
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import integrity
from jax_dissect.store import shard_grid


def test_one_process_is_a_no_op():
  procs = distributed.Processes.current()
  assert (procs.index, procs.count, procs.is_main) == (0, 1, True)
  procs.barrier("anything")
  assert procs.agree([True, False]) == [True, False]
  x = np.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(procs.sum(x), x)
  procs.check_same("config", "a")
  procs.check_shared_directory("/nonexistent", "activation_dir")
  assert procs.block(10) == (0, 10)


def test_blocks_split_items_contiguously():
  blocks = [distributed.Processes(i, 3).block(10) for i in range(3)]
  assert blocks == [(0, 3), (3, 6), (6, 10)]
  shards = [list(shard_grid.process_shards(5, distributed.Processes(i, 2)))
            for i in range(2)]
  assert shards == [[0, 1], [2, 3, 4]]
  # More processes than shards: some get none.
  assert [len(shard_grid.process_shards(1, distributed.Processes(i, 2)))
          for i in range(2)] == [0, 1]


class _ThreadProcesses:
  """Processes of one machine stood for by threads sharing a barrier (and
  `shared`, where process 0 leaves its flags for `agree`)."""

  def __init__(self, index, count, barrier, shared):
    self.index, self.count = index, count
    self._barrier, self._shared = barrier, shared

  def barrier(self, name):
    del name
    self._barrier.wait(timeout=60)

  def agree(self, flags):
    if self.index == 0:
      self._shared["flags"] = list(flags)
    self._barrier.wait(timeout=60)
    out = list(self._shared["flags"])
    self._barrier.wait(timeout=60)
    return out


def _rows(n):
  return {"a": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
          "b": -np.arange(n, dtype=np.float32)[:, None]}


@pytest.mark.parametrize("count", [2, 3])
def test_rows_split_over_processes_then_joined(tmp_path, count):
  cache = cache_lib.ArrayCache(str(tmp_path / "cache"))
  keys = {"a": cache.key("t", name="a"), "b": cache.key("t", name="b")}
  want = _rows(23)
  computed, outputs, errors = [], [None] * count, []
  barrier, shared = threading.Barrier(count), {}

  def compute(start, stop, names):
    computed.append((start, stop))
    return {n: want[n][start:stop] for n in names}

  def process(i):
    try:
      outputs[i] = cache.rows(
          keys, "test", 23, 5, shard_grid.per_shard(compute),
          processes=_ThreadProcesses(i, count, barrier, shared))
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
      barrier.abort()

  threads = [threading.Thread(target=process, args=(i,)) for i in range(count)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  # Each of the 5 shards computed once, by one process.
  assert sorted(computed) == [(0, 5), (5, 10), (10, 15), (15, 20), (20, 23)]
  for out in outputs:
    for n in keys:
      np.testing.assert_array_equal(out[n], want[n])
  # One process later finds the joined entries.
  again = cache.rows(keys, "test", 23, 5,
                     shard_grid.per_shard(compute))
  assert len(computed) == 5
  np.testing.assert_array_equal(again["a"], want["a"])


def test_two_processes_resume_shards_one_process_saved(tmp_path):
  cache = cache_lib.ArrayCache(str(tmp_path / "cache"))
  keys = {"a": cache.key("t", name="a")}
  want = _rows(20)
  writer = cache.sharded_writer(keys["a"], 20, 5)
  writer.save(0, want["a"][0:5])  # Left by an interrupted 1-process run.
  writer.save(3, want["a"][15:20])
  computed = []
  barrier, shared = threading.Barrier(2), {}
  outputs = [None, None]

  def compute(start, stop, names):
    computed.append(start)
    return {n: want[n][start:stop] for n in names}

  def process(i):
    outputs[i] = cache.rows(
        keys, "test", 20, 5, shard_grid.per_shard(compute),
        processes=_ThreadProcesses(i, 2, barrier, shared))

  threads = [threading.Thread(target=process, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(computed) == [5, 10]
  np.testing.assert_array_equal(outputs[1]["a"], want["a"])


def _rows_in_threads(root, keys, num_rows, shard_rows, count=2):
  """ArrayCache.rows on `count` thread 'processes' of one run sharing
  `root`; ({index: result}, [(index, start, names)] computed)."""
  barrier, shared = threading.Barrier(count), {}
  computed, out, errors = [], {}, []

  def one(index):
    procs = _ThreadProcesses(index, count, barrier, shared)

    def compute(start, stop, names):
      computed.append((index, start, tuple(names)))
      return {n: np.arange(start, stop, dtype=np.float32)[:, None]
              * (1 + i) for i, n in enumerate(keys) if n in names}
    try:
      out[index] = cache_lib.ArrayCache(root, clean=False).rows(
          keys, "test", num_rows, shard_rows,
          shard_grid.per_shard(compute), processes=procs)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)
      barrier.abort()

  threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=120)
  assert not any(t.is_alive() for t in threads), "deadlock"
  assert not errors, errors
  return out, computed


def test_processes_of_a_run_share_shards_under_process_0s_locks(tmp_path):
  """Each process computes its own block under process 0's entry locks
  (taking them too would deadlock at the barrier); process 0 joins and
  writes the check records; every process returns the checked entries."""
  c = cache_lib.ArrayCache(str(tmp_path))
  keys = {"a": c.key("a", n=1), "b": c.key("b", n=1)}
  out, computed = _rows_in_threads(str(tmp_path), keys, 10, 3)
  assert sorted((i, s) for i, s, _ in computed) == [
      (0, 0), (0, 3), (1, 6), (1, 9)]
  for i, name in enumerate(keys):
    want = np.arange(10, dtype=np.float32)[:, None] * (1 + i)
    for index in (0, 1):
      np.testing.assert_array_equal(out[index][name], want)
    path = c.path(keys[name])
    assert os.path.exists(integrity.check_path(path))
    assert integrity.verify(path) is None
    assert not os.path.exists(path[:-len(".npy")] + ".parts")
  # A rerun: process 0's hits, nothing computed.
  out, computed = _rows_in_threads(str(tmp_path), keys, 10, 3)
  assert not computed and set(out[1]) == set(keys)


def test_processes_wait_for_another_run_building_the_entry(tmp_path):
  """Another run holds the entry's lock: process 0 waits for it, looks
  again, and every process of the run reads that run's entry."""
  c = cache_lib.ArrayCache(str(tmp_path))
  key = c.key("a", n=2)
  want = np.full((7, 1), 5.0, np.float32)
  holding, release = threading.Event(), threading.Event()

  def other_run():
    with c.locked(key):
      holding.set()
      release.wait(timeout=60)
      c.save(key, want)

  other = threading.Thread(target=other_run)
  other.start()
  holding.wait(timeout=60)
  threading.Timer(1.0, release.set).start()
  out, computed = _rows_in_threads(str(tmp_path), {"a": key}, 7, 2)
  other.join(timeout=60)
  assert not computed
  for index in (0, 1):
    np.testing.assert_array_equal(out[index]["a"], want)
