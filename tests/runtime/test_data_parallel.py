"""The devices option, data-parallel batches, compute dtypes, the loader."""

import os
import shutil
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shared_data
from jax_dissect.data import loader
from jax_dissect.data import probes as data_lib
from jax_dissect.models import resnet
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import precision


def test_devices_option():
  assert data_parallel.check_option("auto") == "auto"
  assert data_parallel.check_option(None) == "auto"
  assert data_parallel.check_option(3) == 3
  assert data_parallel.check_option("4") == 4
  for bad in (0, -1, "all", 2.5, True):
    with pytest.raises(ValueError, match="allowed: 'auto'"):
      data_parallel.check_option(bad)
  assert len(data_parallel.local_devices("auto")) == 8
  assert data_parallel.local_devices(3) == jax.local_devices()[:3]
  with pytest.raises(ValueError, match="only 8 device"):
    data_parallel.local_devices(9)
  # One process: the kernels' devices are the local ones.
  assert data_parallel.kernel_devices("auto") == jax.devices()
  assert data_parallel.kernel_devices(2) == jax.devices()[:2]


class _Calls:
  """A jitted row-wise function that counts its calls and input shapes."""

  def __init__(self):
    self.shapes = []
    self._fn = jax.jit(lambda p, *xs: {"y": xs[0] * p["w"]})

  def __call__(self, params, *xs):
    self.shapes.append(tuple(x.shape for x in xs))
    assert all(len(x.addressable_shards) == len(x.sharding.device_set)
               for x in xs)
    return self._fn(params, *xs)


def test_run_batches_one_batch_per_device():
  dp = data_parallel.DataParallel(4)
  params = dp.replicate({"w": np.float32(2)})
  assert len(params["w"].addressable_shards) == 4
  sizes = [3, 4, 2, 4, 4, 1]
  batches = [np.full((b, 2), i, np.float32) for i, b in enumerate(sizes)]
  fn = _Calls()
  got = list(dp.run_batches(fn, params, batches, rows=4))
  # Six batches on four devices: two calls of 4 batches x 4 rows (the
  # second with two idle devices); outputs per batch, in order, padding
  # dropped.
  assert fn.shapes == [((16, 2),), ((16, 2),)]
  assert [b for _, b in got] == sizes
  for (out, _), batch in zip(got, batches):
    np.testing.assert_array_equal(out["y"], 2 * batch)
    assert isinstance(out["y"], np.ndarray)


def test_run_batches_groups_by_shape():
  dp = data_parallel.DataParallel(3)
  params = dp.replicate({"w": np.float32(1)})
  # Tuples (ids, mask) of per-batch lengths 5, 5, 7, 7, 7, 7, 5.
  lengths = [5, 5, 7, 7, 7, 7, 5]
  batches = [(np.full((2, t), i, np.int32), np.ones((2, t), np.int32))
             for i, t in enumerate(lengths)]
  fn = _Calls()
  got = list(dp.run_batches(fn, params, batches, rows=2))
  # A new call wherever the length changes or the 3 devices are full.
  assert [s[0][1] for s in fn.shapes] == [5, 7, 7, 5]
  assert all(s[0][0] == 6 for s in fn.shapes)
  for (out, rows), (ids, _) in zip(got, batches):
    assert rows == 2
    np.testing.assert_array_equal(out["y"], ids)
  assert list(dp.run_batches(fn, params, [], rows=2)) == []


def test_run_batches_rejects_bad_batches():
  dp = data_parallel.DataParallel(2)
  params = dp.replicate({"w": np.float32(1)})
  with pytest.raises(ValueError, match="a batch has 5 rows, more than "
                     "batch_size=4"):
    list(dp.run_batches(_Calls(), params, [np.ones((5, 2))], rows=4))
  with pytest.raises(ValueError, match="different numbers of rows"):
    list(dp.run_batches(_Calls(), params,
                        [(np.ones((2, 2)), np.ones((3, 2)))], rows=4))
  with pytest.raises(ValueError, match="rows=0"):
    list(dp.run_batches(_Calls(), params, [np.ones((1, 2))], rows=0))


def test_compute_dtypes():
  tree = {"w": np.ones(2, np.float32), "step": np.int32(3),
          "b": jnp.zeros(2)}
  half = precision.cast_floating(tree, "bfloat16")
  assert half["w"].dtype == jnp.bfloat16 and half["b"].dtype == jnp.bfloat16
  assert half["step"].dtype == np.int32
  assert precision.cast_floating(tree, "float32") is tree
  module = resnet.ResNet18()
  assert precision.with_dtype(module, "float16").dtype == jnp.float16
  assert precision.with_dtype(module, "float32") is module
  assert precision.with_dtype(nn.relu, "bfloat16") is nn.relu
  with pytest.raises(ValueError, match="compute_dtype='fp8' is not valid; "
                     "allowed: float32, bfloat16, float16"):
    precision.check("fp8")


@pytest.fixture
def probe(tmp_path):
  folder = tmp_path / "probe"
  folder.mkdir()
  sample = shared_data.path("imagenet_sample")
  for name in sorted(os.listdir(sample))[:11]:
    shutil.copy(os.path.join(sample, name), folder / name)
  return data_lib.ImageFolder(str(folder))


def _small(image):
  return np.asarray(image.resize((8, 8)), np.float32)


@pytest.mark.parametrize("prefetch", [1, 2, 4])
def test_loader_yields_the_range_in_order(probe, prefetch):
  stats = loader.InputStats()
  got = list(loader.batches(probe, 2, 11, 4, _small, num_threads=2,
                            prefetch=prefetch, stats=stats))
  assert [b.shape[0] for b in got] == [4, 4, 1]
  want = np.stack([_small(probe.load(i)) for i in range(2, 11)])
  np.testing.assert_array_equal(np.concatenate(got), want)
  assert stats.images == 9 and stats.wait_s >= 0


def test_loader_range_batches_stay_within_ranges(probe):
  stats = loader.InputStats()
  got = list(loader.range_batches(probe, [(0, 5), (5, 7), (9, 11)], 3,
                                  _small, num_threads=2, prefetch=2,
                                  stats=stats))
  assert [b.shape[0] for b in got] == [3, 2, 2, 2]
  want = np.stack([_small(probe.load(i)) for i in [0, 1, 2, 3, 4, 5, 6, 9,
                                                   10]])
  np.testing.assert_array_equal(np.concatenate(got), want)
  assert stats.images == 9


def test_loader_measures_waiting(probe):
  def slow(image):
    time.sleep(0.05)
    return _small(image)
  stats = loader.InputStats()
  for _ in loader.batches(probe, 0, 8, 4, slow, num_threads=1, stats=stats):
    pass
  # One thread decodes 8 images at >= 0.05 s each; the consumer does
  # nothing, so it waits for nearly all of it.
  assert stats.wait_s >= 0.3
  from_files, without_waits = stats.rates(stats.wait_s + 0.1)
  assert without_waits == pytest.approx(8 / 0.1, rel=1e-6)
  assert from_files < without_waits
  with pytest.raises(ValueError, match="prefetch=0"):
    list(loader.batches(probe, 0, 8, 4, slow, prefetch=0))
  assert loader.default_threads() >= 1


def test_half_precision_overflow_is_named():
  precision.check_finite({"x": np.array([np.inf])}, "float32", "a")
  with pytest.raises(ValueError, match="activations of 'layer4' overflow "
                     "with compute_dtype=float16: 1 value"):
    precision.check_finite({"layer4": np.array([1.0, np.inf])}, "float16",
                           "activations")
