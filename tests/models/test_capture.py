"""Layer capture and pooling, against torch forward hooks and by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_dissect.models import capture as activations
from jax_dissect.models import convert
from jax_dissect.models import get_model
from jax_dissect.models import resnet

HOOK_LAYERS = ["conv1", "layer2", "layer4", "layer3.1.conv2",
               "layer2.0.downsample", "fc"]


@pytest.fixture(scope="module")
def resnet18():
  module, variables = get_model("resnet18").load(weights="random")
  return module, variables


@pytest.mark.parametrize("pool", ["avg", "max", "mean"])
def test_pooled_equals_torch_hooks(pool):
  from torch_reference import resnet as _torch_resnet  # pylint: disable=g-import-not-at-top
  torch_model = _torch_resnet.random_torchvision_resnet("resnet18", seed=2)
  module = resnet.ResNet18()
  variables = convert.convert_state_dict(
      _torch_resnet.state_dict_numpy(torch_model),
      convert.abstract_variables(module, (1, 32, 32, 3)))
  images = np.random.default_rng(1).normal(size=(2, 48, 48, 3)).astype(
      np.float32)
  want, _ = _torch_resnet.torch_outputs(torch_model, images, HOOK_LAYERS)
  got = activations.capture_pooled(module, variables, images, HOOK_LAYERS,
                                   pool=pool)
  assert list(got) == HOOK_LAYERS
  for layer in HOOK_LAYERS:
    ref = want[layer]
    if ref.ndim == 4:
      ref = ref.max(axis=(2, 3)) if pool == "max" else ref.mean(axis=(2, 3))
    np.testing.assert_allclose(np.asarray(got[layer]), ref, rtol=1e-4,
                               atol=1e-4 * np.abs(ref).max(), err_msg=layer)
    assert got[layer].dtype == jnp.float32


def test_unknown_layer_lists_valid_nearest_first(resnet18):
  module, variables = resnet18
  images = np.zeros((2, 32, 32, 3), np.float32)
  with pytest.raises(ValueError) as e:
    activations.capture_pooled(module, variables, images, ["layer5", "conv1"])
  message = str(e.value)
  assert "'layer5'" in message and "closest: layer4" in message
  valid = message.split("nearest first: ")[1].split(", ")
  assert valid[0] == "layer4"
  # As many as fit one line of <= 300 characters (issue 25).
  every = activations.list_layers(module, variables, (1, 32, 32, 3))
  assert valid[-1] == f"... (list_layers gives all {len(every)})"
  assert set(valid[:-1]) < set(every) and len(message) <= 300


def test_list_layers(resnet18):
  module, variables = resnet18
  layers = activations.list_layers(module, variables, (2, 64, 64, 3))
  assert layers["conv1"] == (2, 32, 32, 64)
  assert layers["layer4"] == (2, 2, 2, 512)
  assert layers["layer4.1.conv2"] == (2, 2, 2, 512)
  assert layers["layer2.0.downsample"] == (
      2, 8, 8, 128)
  assert layers["fc"] == (2, 1000)
  assert "" not in layers and "layer1.0.downsample" not in layers
  assert list(layers)[0] == "conv1"


def test_bad_pool(resnet18):
  module, variables = resnet18
  with pytest.raises(ValueError, match=r"pool='median'; allowed: \['avg', "
                     r"'max'\]"):
    activations.capture_pooled(module, variables,
                               np.zeros((1, 32, 32, 3), np.float32),
                               ["conv1"], pool="median")


class _TokenModel(nn.Module):
  """A tiny non-ResNet module with token (B, T, C) and 2-D outputs."""

  @nn.compact
  def __call__(self, x):
    tokens = nn.Dense(5, name="embed")(x.reshape(x.shape[0], -1, 3))
    tokens = nn.LayerNorm(name="norm")(tokens)
    return nn.Dense(2, name="head")(tokens[:, 0])


def test_generic_module_token_and_dense_outputs():
  module = _TokenModel()
  images = np.random.default_rng(0).normal(size=(3, 4, 4, 3)).astype(
      np.float32)
  variables = module.init(jax.random.key(0), images)
  assert activations.list_layers(module, variables, images.shape) == {
      "embed": (3, 16, 5), "norm": (3, 16, 5), "head": (3, 2)}
  got = activations.capture_pooled(module, variables, images,
                                   ["norm", "head"])
  _, state = module.apply(variables, images, capture_intermediates=True,
                          mutable=["intermediates"])
  norm = np.asarray(state["intermediates"]["norm"]["__call__"][0])
  np.testing.assert_allclose(got["norm"], norm[:, 0], rtol=1e-6)
  np.testing.assert_allclose(got["head"], module.apply(variables, images),
                             rtol=1e-6)


def test_collect_activations_streams_in_order(resnet18):
  module, variables = resnet18
  images = np.random.default_rng(3).normal(size=(5, 32, 32, 3)).astype(
      np.float32)
  layers = ["layer1", "layer4.1", "fc"]
  whole = activations.capture_pooled(module, variables, images, layers,
                                     pool="max")
  from_array = activations.collect_activations(
      module, variables, images, layers, pool="max", batch_size=2)
  batches = (images[i:i + 2] for i in range(0, 5, 2))
  from_iter = activations.collect_activations(
      module, variables, batches, layers, pool="max", batch_size=2,
      num_images=5, log_every_s=0.0)
  for layer in layers:
    assert from_array[layer].shape == whole[layer].shape
    assert from_array[layer].dtype == np.float32
    # Batch size changes XLA's conv algorithm: equal to float32 precision.
    np.testing.assert_allclose(from_array[layer], whole[layer], rtol=1e-4,
                               atol=1e-5 * np.abs(whole[layer]).max())
    np.testing.assert_array_equal(from_iter[layer], from_array[layer])


def test_iter_activations_yields_batches(resnet18):
  module, variables = resnet18
  images = np.random.default_rng(4).normal(size=(3, 32, 32, 3)).astype(
      np.float32)
  batches = list(activations.iter_activations(module, variables, images,
                                              ["layer3"], batch_size=2))
  assert [b["layer3"].shape for b in batches] == [(2, 256), (1, 256)]


class _Pair(nn.Module):

  @nn.compact
  def __call__(self, x):
    return x, x


class _TupleModel(nn.Module):

  @nn.compact
  def __call__(self, x):
    a, _ = _Pair(name="pair")(x)
    return nn.Dense(2, name="head")(a.reshape(a.shape[0], -1))


def test_tuple_output_is_refused_clearly():
  module = _TupleModel()
  images = np.zeros((2, 2, 2, 3), np.float32)
  variables = module.init(jax.random.key(0), images)
  assert list(activations.list_layers(module, variables, images.shape)) == [
      "head"]
  with pytest.raises(ValueError, match="'pair' outputs a tuple"):
    activations.capture_pooled(module, variables, images, ["pair"])


def test_collect_activations_bad_input(resnet18):
  module, variables = resnet18
  with pytest.raises(ValueError, match="more than batch_size=2"):
    activations.collect_activations(
        module, variables, [np.zeros((3, 32, 32, 3), np.float32)], ["fc"],
        batch_size=2)
  with pytest.raises(ValueError, match="empty"):
    activations.collect_activations(module, variables, [], ["fc"])
  with pytest.raises(ValueError, match="layers is empty"):
    activations.collect_activations(module, variables, [], [])


@pytest.mark.parametrize("num_images,batch_size", [(13, 6), (5, 8), (40, 3)])
def test_data_parallel_equals_one_device(resnet18, num_images, batch_size):
  """One batch per device (the last call with idle devices, the last batch
  shorter) gives the 1-device activations bit for bit, on 8 or 3
  devices."""
  module, variables = resnet18
  images = np.random.default_rng(3).normal(
      size=(num_images, 32, 32, 3)).astype(np.float32)
  layers = ["conv1", "layer3", "fc"]
  one = activations.collect_activations(module, variables, images, layers,
                                        batch_size=batch_size, devices=1)
  assert len(jax.local_devices()) == 8
  for devices in ("auto", 3):
    every = activations.collect_activations(module, variables, images,
                                            layers, batch_size=batch_size,
                                            devices=devices)
    for layer in layers:
      assert every[layer].shape == (num_images, one[layer].shape[1])
      np.testing.assert_array_equal(every[layer], one[layer],
                                    err_msg=f"{layer}, devices={devices}")


def test_devices_option_is_checked(resnet18):
  module, variables = resnet18
  images = np.zeros((2, 32, 32, 3), np.float32)
  with pytest.raises(ValueError, match="devices=9: this process has only 8"):
    activations.collect_activations(module, variables, images, ["fc"],
                                    devices=9)
  with pytest.raises(ValueError, match="devices='many' is not valid"):
    activations.collect_activations(module, variables, images, ["fc"],
                                    devices="many")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_returns_float32_close_to_float32(resnet18, dtype):
  module, variables = resnet18
  images = np.random.default_rng(4).normal(size=(6, 32, 32, 3)).astype(
      np.float32)
  layers = ["conv1", "layer4", "fc"]
  ref = activations.collect_activations(module, variables, images, layers,
                                        batch_size=3)
  half = activations.collect_activations(module, variables, images, layers,
                                         batch_size=3, compute_dtype=dtype)
  for layer in layers:
    assert half[layer].dtype == np.float32
    scale = np.abs(ref[layer]).max()
    err = np.abs(half[layer] - ref[layer]).max() / scale
    # Half precision rounds (not float32 to 1e-6), but stays close.
    assert 1e-6 < err < 0.1, (layer, err)
  with pytest.raises(ValueError, match="compute_dtype='int8' is not valid"):
    activations.collect_activations(module, variables, images, layers,
                                    compute_dtype="int8")


class _Scale(nn.Module):

  def __call__(self, x):
    return x * 300.0 * 300.0  # 90000 > float16 max.


class _Big(nn.Module):

  @nn.compact
  def __call__(self, x):
    return _Scale(name="big")(x)


def test_float16_overflow_is_an_error_naming_the_layer():
  images = np.ones((2, 4, 4, 3), np.float32)
  ok = activations.collect_activations(_Big(), {}, images, ["big"],
                                       compute_dtype="bfloat16")
  np.testing.assert_allclose(ok["big"], 9e4, rtol=1e-2)
  with pytest.raises(ValueError, match="activations of 'big' overflow with "
                     "compute_dtype=float16"):
    activations.collect_activations(_Big(), {}, images, ["big"],
                                    compute_dtype="float16")


def test_a_layer_captured_alone_equals_it_captured_with_others(resnet18):
  """Issue 25: a truncated cache entry of one layer was recomputed alone,
  and XLA compiled the model cut short after that layer differently: its
  activations differed by up to 2e-5 from the all-layers pass, so labels
  could change after a repair. The capture now always runs the whole
  model: a layer's rows are the same bits in any layer set."""
  module, variables = resnet18
  images = np.random.default_rng(0).normal(size=(8, 64, 64, 3)).astype(
      np.float32)
  layers = ["conv1", "layer1", "layer3", "layer4"]
  together = activations.collect_activations(module, variables, images,
                                             layers, batch_size=8)
  for layer in layers[:3]:
    alone = activations.collect_activations(module, variables, images,
                                            [layer], batch_size=8)[layer]
    np.testing.assert_array_equal(alone, together[layer], err_msg=layer)
  pair = activations.capture_outputs(module, variables, images,
                                     ["layer1", "layer3"])
  single = activations.capture_outputs(module, variables, images, ["layer1"])
  np.testing.assert_array_equal(np.asarray(single["layer1"]),
                                np.asarray(pair["layer1"]))
