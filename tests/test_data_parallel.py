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
from jax_dissect import data as data_lib
from jax_dissect import data_parallel
from jax_dissect import loader
from jax_dissect import precision
from jax_dissect.models import resnet


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


def test_batches_are_padded_and_split():
  dp = data_parallel.DataParallel(4)
  assert dp.padded_size(6) == 8 and dp.padded_size(8) == 8
  x = dp.put_batch(np.ones((5, 2), np.float32), 8)
  assert x.shape == (8, 2)
  assert len(x.addressable_shards) == 4
  assert {s.data.shape for s in x.addressable_shards} == {(2, 2)}
  np.testing.assert_array_equal(np.asarray(x)[5:], 0)
  with pytest.raises(ValueError, match="cannot be padded"):
    dp.put_batch(np.ones((9, 2)), 8)
  params = dp.replicate({"w": np.ones(3)})
  assert len(params["w"].addressable_shards) == 4


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
