"""Flax ResNet-18/50 vs torchvision on random weights, non-trivial BN stats."""

import jax
import numpy as np
import pytest

from jax_dissect.models import convert
from jax_dissect.models import resnet
from torch_reference import resnet as _torch_resnet

LAYERS = ["conv1", "layer1", "layer2", "layer3", "layer4"]
FLAX_MODELS = {"resnet18": resnet.ResNet18, "resnet50": resnet.ResNet50}


def _assert_close(got, want, what):
  """1e-4 relative to the reference's scale, elementwise."""
  scale = float(np.max(np.abs(want)))
  err = float(np.max(np.abs(got - want)))
  assert got.shape == want.shape, (what, got.shape, want.shape)
  assert err <= 1e-4 * scale, (
      f"{what}: max |flax - torch| = {err:.3g}, > 1e-4 * max|torch| "
      f"({scale:.3g}); relative {err / scale:.3g}")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_matches_torchvision(name):
  torch_model = _torch_resnet.random_torchvision_resnet(name, seed=1)
  module = FLAX_MODELS[name]()
  variables = convert.convert_state_dict(
      _torch_resnet.state_dict_numpy(torch_model),
      convert.abstract_variables(module, (1, 64, 64, 3)))
  images = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype(
      np.float32)

  want, want_logits = _torch_resnet.torch_outputs(torch_model, images, LAYERS)
  keep = lambda mdl, method: method == "__call__" and (
      ".".join(mdl.scope.path) in LAYERS)
  logits, state = jax.jit(lambda v, x: module.apply(
      v, x, capture_intermediates=keep, mutable=["intermediates"]))(
          variables, images)

  _assert_close(np.asarray(logits), want_logits, f"{name} logits")
  assert np.std(want_logits) > 1e-3  # The check is not vacuous.
  for layer in LAYERS:
    got = np.asarray(state["intermediates"][layer]["__call__"][0])
    _assert_close(got, want[layer].transpose(0, 2, 3, 1), f"{name} {layer}")


def test_module_names_mirror_torchvision():
  torch_model = _torch_resnet.random_torchvision_resnet("resnet50")
  torch_keys = {k for k in torch_model.state_dict()
                if not k.endswith("num_batches_tracked")}
  flax_keys = set(convert.torch_key_map(
      convert.abstract_variables(resnet.ResNet50(), (1, 32, 32, 3))))
  assert flax_keys == torch_keys


def test_rejects_non_image_input():
  module = resnet.ResNet18()
  with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
    convert.abstract_variables(module, (1, 32, 32))
