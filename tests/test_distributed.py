"""Processes of a run (one, in these tests) and the cache's process split.

Two real processes are started in tests/test_multiprocess.py; here the
split of ArrayCache.rows is shown with two threads standing for them.
"""

import threading

import numpy as np
import pytest

from jax_dissect import cache as cache_lib
from jax_dissect import distributed


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
  shards = [list(cache_lib.process_shards(5, distributed.Processes(i, 2)))
            for i in range(2)]
  assert shards == [[0, 1], [2, 3, 4]]
  # More processes than shards: some get none.
  assert [len(cache_lib.process_shards(1, distributed.Processes(i, 2)))
          for i in range(2)] == [0, 1]


class _ThreadProcesses:
  """Processes of one machine stood for by threads sharing a barrier."""

  def __init__(self, index, count, barrier):
    self.index, self.count, self._barrier = index, count, barrier

  def barrier(self, name):
    del name
    self._barrier.wait(timeout=60)

  def agree(self, flags):
    return list(flags)


def _rows(n):
  return {"a": np.arange(n * 3, dtype=np.float32).reshape(n, 3),
          "b": -np.arange(n, dtype=np.float32)[:, None]}


@pytest.mark.parametrize("count", [2, 3])
def test_rows_split_over_processes_then_joined(tmp_path, count):
  cache = cache_lib.ArrayCache(str(tmp_path / "cache"))
  keys = {"a": cache.key("t", name="a"), "b": cache.key("t", name="b")}
  want = _rows(23)
  computed, outputs, errors = [], [None] * count, []
  barrier = threading.Barrier(count)

  def compute(start, stop, names):
    computed.append((start, stop))
    return {n: want[n][start:stop] for n in names}

  def process(i):
    try:
      outputs[i] = cache.rows(keys, "test", 23, 5, compute,
                              processes=_ThreadProcesses(i, count, barrier))
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
  again = cache.rows(keys, "test", 23, 5, compute)
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
  barrier = threading.Barrier(2)
  outputs = [None, None]

  def compute(start, stop, names):
    computed.append(start)
    return {n: want[n][start:stop] for n in names}

  def process(i):
    outputs[i] = cache.rows(keys, "test", 20, 5, compute,
                            processes=_ThreadProcesses(i, 2, barrier))

  threads = [threading.Thread(target=process, args=(i,)) for i in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(computed) == [5, 10]
  np.testing.assert_array_equal(outputs[1]["a"], want["a"])
