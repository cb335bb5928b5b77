"""Dissecting user-defined Flax modules (linen and nnx), end to end.

`make_model` and `make_nnx_model` are `module:factory` targets for the
pipeline (target_model="tests.models.test_any_model:make_model"), as a user's own
package would define them.
"""

import csv

from flax import nnx
import flax.linen as nn
import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest

import jax_dissect
from jax_dissect import models
from jax_dissect import pipeline
from jax_dissect.data import preprocess
from jax_dissect.data import probes as data_lib
from jax_dissect.models import capture as activations

TRANSFORM = preprocess.ImageTransform(resize=16, crop=16, mean=(0.5,) * 3,
                                      std=(0.25,) * 3)
NUM_IMAGES = 6


class SmallCNN(nn.Module):
  """A user's CNN: two conv layers, a hidden dense layer, a 3-way head."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3), name="conv1")(x))
    x = nn.relu(nn.Conv(6, (3, 3), strides=2, name="conv2")(x))
    x = nn.relu(nn.Dense(5, name="fc1")(x.mean((1, 2))))
    return nn.Dense(3, name="head")(x)


def make_model():
  """The user's ModelSpec: random weights come from the registry's init."""
  return models.ModelSpec("small_cnn", SmallCNN, default_weights="",
                          transform=TRANSFORM, num_classes=3, input_size=16)


class NnxNet(nnx.Module):
  """A user's nnx model: a conv, then a list of dense layers."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs),
                            nnx.Linear(4, 3, rngs=rngs)])

  def __call__(self, x):
    x = nnx.relu(self.conv(x)).mean((1, 2))
    for block in self.blocks:
      x = block(x)
    return x


def _load_nnx(weights, seed):
  del weights  # Always random here; a user would restore a checkpoint.
  model = NnxNet(nnx.Rngs(seed))
  return model, nnx.state(model)


def make_nnx_model():
  return models.ModelSpec("nnx_net", lambda: NnxNet(nnx.Rngs(0)), "random",
                          TRANSFORM, 3, input_size=16, loader=_load_nnx)


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("probe")
  rng = np.random.default_rng(0)
  for i in range(NUM_IMAGES):
    arr = rng.integers(0, 255, size=(20, 24, 3), dtype=np.uint8)
    Image.fromarray(arr).save(root / f"img{i}.png")
  return str(root)


def _probe_batch(probe_dir, transform):
  """The probe images in the pipeline's order, preprocessed."""
  folder = data_lib.ImageFolder(probe_dir)
  return np.stack([transform(folder.load(i)) for i in range(len(folder))])


def _describe(tmp_path, probe_dir, target, layers, p, concepts):
  (tmp_path / "concepts.txt").write_text("\n".join(concepts) + "\n")
  np.save(tmp_path / "p.npy", p)
  config = ml_collections.ConfigDict({
      "target_model": target, "target_weights": "random",
      "target_layers": layers, "d_probe": f"folder:{probe_dir}",
      "concept_set": str(tmp_path / "concepts.txt"),
      "concept_activations": str(tmp_path / "p.npy"),
      "similarity_fn": "cos_similarity", "sharding": "none",
      "batch_size": 4, "activation_dir": str(tmp_path / "cache"),
      "result_dir": str(tmp_path / "results")})
  results = pipeline.describe_neurons(config)
  with open(tmp_path / "results" / "descriptions.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  return results, rows


def test_user_linen_cnn_end_to_end(tmp_path, probe_dir):
  """A user CNN from an import path, with a precomputed P.

  P's first columns are the head's own activations, so under
  cos_similarity head neuron k must be labelled with concept k: this checks
  that images, activations and P rows line up through the pipeline.
  """
  module, variables = make_model().load("random")
  head = np.asarray(activations.capture_pooled(
      module, variables, _probe_batch(probe_dir, TRANSFORM),
      ["head"])["head"])
  extra = np.random.default_rng(1).normal(size=(NUM_IMAGES, 1))
  p = np.concatenate([head, extra], axis=1).astype(np.float32)
  concepts = ["zero", "one", "two", "noise"]
  results, rows = _describe(tmp_path, probe_dir,
                            "tests.models.test_any_model:make_model",
                            "conv2,fc1,head", p, concepts)
  assert results.layers == ["conv2", "fc1", "head"]
  counts = {l: sum(r["layer"] == l for r in rows) for l in results.layers}
  assert counts == {"conv2": 6, "fc1": 5, "head": 3}
  head_rows = [r for r in rows if r["layer"] == "head"]
  assert [r["description"] for r in head_rows] == ["zero", "one", "two"]
  for r in head_rows:
    assert float(r["similarity"]) == pytest.approx(1.0, abs=1e-5)
  assert all(r["description"] in concepts for r in rows)


def test_user_nnx_model_end_to_end(tmp_path, probe_dir):
  p = np.random.default_rng(2).normal(size=(NUM_IMAGES, 3)).astype(
      np.float32)
  results, rows = _describe(tmp_path, probe_dir,
                            "tests.models.test_any_model:make_nnx_model",
                            "conv,blocks.0", p, ["a", "b", "c"])
  assert [len(results.layer_neurons(l)) for l in results.layers] == [4, 4]
  assert len(rows) == 8


def test_nnx_list_layers_and_capture():
  model = NnxNet(nnx.Rngs(0))
  x = np.random.default_rng(3).normal(size=(2, 8, 8, 3)).astype(np.float32)
  assert jax_dissect.list_layers(model, None, x.shape) == {
      "conv": (2, 8, 8, 4), "blocks.0": (2, 4), "blocks.1": (2, 3)}
  got = jax_dissect.capture_pooled(model, None, x, ["conv", "blocks.1"],
                                   pool="max")
  np.testing.assert_allclose(got["conv"], model.conv(x).max((1, 2)),
                             rtol=1e-5)
  np.testing.assert_allclose(got["blocks.1"], model(x), rtol=1e-5)
  # Variables as a pure dict (e.g. restored from a checkpoint) override the
  # module's own state, which is left unchanged.
  pure = jax.tree.map(lambda v: v * 2, nnx.to_pure_dict(nnx.state(model)))
  doubled = jax_dissect.capture_pooled(model, pure, x, ["blocks.0"])
  graphdef, state = nnx.split(model)
  nnx.replace_by_pure_dict(state, pure)
  other = nnx.merge(graphdef, state)
  want = np.asarray(other.blocks[0](nnx.relu(other.conv(x)).mean((1, 2))))
  np.testing.assert_allclose(doubled["blocks.0"], want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      jax_dissect.capture_pooled(model, None, x, ["blocks.1"])["blocks.1"],
      model(x), rtol=1e-5)
  acts = jax_dissect.collect_activations(model, nnx.state(model), x,
                                         ["blocks.1"], batch_size=1)
  np.testing.assert_allclose(acts["blocks.1"], model(x), rtol=1e-5)
  with pytest.raises(ValueError, match="do not fit the nnx module NnxNet"):
    jax_dissect.capture_pooled(model, {"nope": 1}, x, ["conv"])


def test_nnx_unknown_layer_lists_nearest():
  model = NnxNet(nnx.Rngs(0))
  x = np.zeros((1, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match=r"'blocks\.2' \(closest: blocks\.1, "
                     r"blocks\.0"):
    jax_dissect.capture_pooled(model, None, x, ["blocks.2"])


def test_linen_apply_fn():
  """Any function that applies the module, e.g. with its own preprocessing."""
  module, variables = make_model().load("random")
  x = np.random.default_rng(4).normal(size=(2, 16, 16, 3)).astype(np.float32)

  def apply_fn(v, images):
    return module.apply(v, images * 2.0)

  got = jax_dissect.capture_pooled(module, variables, x, ["conv2", "head"],
                                   apply_fn=apply_fn)
  want = jax_dissect.capture_pooled(module, variables, x * 2.0,
                                    ["conv2", "head"])
  for layer in ("conv2", "head"):
    np.testing.assert_allclose(got[layer], want[layer], rtol=1e-6)
  assert list(jax_dissect.list_layers(module, variables, x.shape,
                                      apply_fn=apply_fn)) == [
                                          "conv1", "conv2", "fc1", "head"]


def test_unknown_linen_layer_lists_nearest():
  module, variables = make_model().load("random")
  x = np.zeros((1, 16, 16, 3), np.float32)
  with pytest.raises(ValueError) as e:
    jax_dissect.capture_pooled(module, variables, x, ["conv3"])
  message = str(e.value)
  assert "'conv3' (closest: conv2, conv1" in message
  assert message.endswith("nearest first: conv2, conv1, fc1, head")


class _Odd(nn.Module):
  """Outputs of ranks the pooling rules do not cover."""

  @nn.compact
  def __call__(self, x):
    volume = _Identity(name="volume")(x[:, None])  # (B, 1, H, W, C).
    score = _Identity(name="score")(x.mean((1, 2, 3)))  # (B,).
    pair = _Pair(name="pair")(x)
    return volume.sum() + score.sum() + pair[0].sum()


class _Identity(nn.Module):

  @nn.compact
  def __call__(self, x):
    return x


class _Pair(nn.Module):

  @nn.compact
  def __call__(self, x):
    return x, x.mean(-1)


def test_unsupported_outputs_say_what_was_found_and_what_to_do():
  module = _Odd()
  x = np.zeros((2, 4, 4, 3), np.float32)
  assert jax_dissect.list_layers(module, {}, x.shape) == {
      "volume": (2, 1, 4, 4, 3), "score": (2,)}
  with pytest.raises(ValueError, match=r"'volume' outputs shape \(2, 1, 4, "
                     r"4, 3\) \(rank 5\); pooling supports .*reshape"):
    jax_dissect.capture_pooled(module, {}, x, ["volume"])
  with pytest.raises(ValueError, match=r"'score' outputs shape \(2,\) "
                     r"\(rank 1\).*x\[:, None\]"):
    jax_dissect.capture_pooled(module, {}, x, ["score"])
  with pytest.raises(ValueError, match=r"'pair' outputs a tuple of 2 values "
                     r"\(\(2, 4, 4, 3\), \(2, 4, 4\)\), not an array"):
    jax_dissect.capture_pooled(module, {}, x, ["pair"])
