"""Model registry: names, random weights, fingerprints."""

import jax
import numpy as np
import pytest

from jax_dissect import models
from jax_dissect.data import preprocess


def test_unknown_model_lists_valid_names():
  with pytest.raises(ValueError, match=r"'vgg16'.*resnet18.*resnet50"):
    models.get_model("vgg16")


def test_specs():
  for name in ("resnet18", "resnet50"):
    spec = models.get_model(name)
    assert spec.name == name and spec.num_classes == 1000
    assert spec.transform == preprocess.TORCHVISION_IMAGENET_EVAL
    assert spec.default_weights == f"timm/{name}.tv_in1k"
  assert models.list_models() == ["clip_vision", "resnet18",
                                  "resnet18_cifar100", "resnet18_places365",
                                  "resnet50", "vit_b16"]


def test_places365_needs_a_weights_file():
  spec = models.get_model("resnet18_places365")
  assert spec.num_classes == 365
  with pytest.raises(ValueError, match="no downloadable default weights"):
    spec.load()


def test_cifar100_resnet_has_cifar_stem():
  spec = models.get_model("resnet18_cifar100")
  module, variables = spec.load(weights="random")
  assert variables["params"]["conv1"]["kernel"].shape == (3, 3, 3, 64)
  x = np.zeros((2, 32, 32, 3), np.float32)
  assert module.apply(variables, x).shape == (2, 100)
  assert spec.transform(np.zeros((32, 32, 3), np.uint8)).shape == (32, 32, 3)


def test_random_weights_are_seeded_with_nontrivial_batch_norm():
  spec = models.get_model("resnet18")
  module, variables = spec.load(weights="random", seed=3)
  _, again = spec.load(weights="random", seed=3)
  _, other = spec.load(weights="random", seed=4)
  fingerprint = models.weights_fingerprint(variables)
  assert fingerprint == models.weights_fingerprint(again)
  assert fingerprint != models.weights_fingerprint(other)
  stats = variables["batch_stats"]["layer1"]["0"]["bn1"]
  assert np.abs(stats["mean"]).max() > 0.01
  assert np.abs(stats["var"] - 1).max() > 0.01
  assert np.abs(variables["params"]["bn1"]["scale"] - 1).max() > 0.01
  logits = module.apply(variables, np.zeros((1, 32, 32, 3), np.float32))
  assert logits.shape == (1, 1000) and np.all(np.isfinite(logits))


def test_fingerprint_is_container_independent_and_sensitive():
  _, variables = models.get_model("resnet18").load(weights="random")
  as_jax = jax.tree.map(jax.numpy.asarray, variables)
  assert (models.weights_fingerprint(variables) ==
          models.weights_fingerprint(as_jax))
  changed = jax.tree.map(np.copy, variables)
  changed["params"]["fc"]["bias"][0] += 1e-6
  assert (models.weights_fingerprint(variables) !=
          models.weights_fingerprint(changed))


def test_bad_weights_argument():
  with pytest.raises(ValueError, match="not 'random'"):
    models.get_model("resnet18").load(weights="no_such_file")


def test_register_model_refuses_duplicates():
  spec = models.get_model("resnet18")
  with pytest.raises(ValueError, match="already registered"):
    models.register_model(spec)
