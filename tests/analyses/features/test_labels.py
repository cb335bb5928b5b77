"""label_directions, project, label_units and label_features' contract."""

import numpy as np
import pytest

from jax_dissect import features
from jax_dissect import similarity
from tests.helpers import planted_features as planted

NUM_CONCEPTS = 64


@pytest.fixture(scope="module")
def data():
  return planted.superposition(num_concepts=NUM_CONCEPTS, width=32)


@pytest.mark.parametrize("kernel", ["soft_wpmi", "cos_similarity"])
def test_planted_directions_name_their_concepts_random_ones_do_not(
    data, kernel, tmp_path):
  """The planted concept directions (64 x 32), given as a .npy file, are
  labelled with their own concepts; random directions name (almost) none."""
  path = tmp_path / "dirs.npy"
  np.save(path, data.directions)
  labels = features.label_directions(str(path), data.acts, data.p,
                                     kernel=kernel)
  assert labels.scores.shape == (NUM_CONCEPTS, NUM_CONCEPTS)
  own = np.mean(labels.index == np.arange(NUM_CONCEPTS))
  # Measured: soft_wpmi 1.0, cos_similarity 1.0 (the projection onto d_m
  # is concept m's activity plus cross-talk from the other concepts).
  assert own >= 0.9, own

  rng = np.random.default_rng(3)
  random_dirs = rng.standard_normal((NUM_CONCEPTS, 32))
  rand = features.label_directions(random_dirs, data.acts, data.p,
                                   kernel=kernel)
  proj = features.project(data.acts, random_dirs)
  named, _ = planted.named_concepts(proj, rand.index, data.presence)
  assert named <= 0.1 * NUM_CONCEPTS, named


def test_label_units_is_the_kernel_on_active_units(data):
  units = data.acts[:, :8].copy()
  units[:, 3] = 0.0  # An inactive unit.
  names = [f"c{i}" for i in range(NUM_CONCEPTS)]
  labels = features.label_units(units, data.p, kernel="soft_wpmi",
                                concepts=names)
  active = [0, 1, 2, 4, 5, 6, 7]
  want = np.asarray(similarity.compute("soft_wpmi", units[:, active],
                                       data.p))
  np.testing.assert_array_equal(labels.scores[active], want)
  assert np.isnan(labels.scores[3]).all()
  assert labels.index[3] == -1 and labels.names[3] == ""
  np.testing.assert_array_equal(labels.index[active], want.argmax(1))
  assert labels.names[0] == names[labels.index[0]]
  vals, idx = labels.top(3)
  assert idx.shape == (8, 3) and (idx[3] == -1).all()
  assert (idx[active, 0] == labels.index[active]).all()


def test_label_features_scores_codes(data):
  sae = features.train_sae(data.acts, 64, epochs=1, devices=1)
  labels = features.label_features(sae, data.acts, data.p,
                                   kernel="cos_similarity")
  codes = sae.encode(data.acts)
  active = codes.any(axis=0)
  np.testing.assert_array_equal(labels.active, active)
  np.testing.assert_allclose(
      labels.scores[active],
      np.asarray(similarity.compute("cos_similarity", codes[:, active],
                                    data.p)), rtol=1e-6)


def test_project_pools_maps_like_neurons():
  rng = np.random.default_rng(0)
  maps = rng.standard_normal((6, 3, 4, 8)).astype(np.float32)
  dirs = rng.standard_normal((5, 8)).astype(np.float32)
  unit = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
  # Mean pooling is linear: projecting the mean-pooled map is the same.
  np.testing.assert_allclose(features.project(maps, dirs),
                             maps.mean(axis=(1, 2)) @ unit.T, atol=1e-5)
  np.testing.assert_allclose(
      features.project(maps, dirs, pool="max"),
      (maps @ unit.T).max(axis=(1, 2)), atol=1e-5)
  np.testing.assert_allclose(
      features.project(maps, dirs, normalize=False),
      maps.mean(axis=(1, 2)) @ dirs.T, atol=1e-5)
  tokens = maps.reshape(6, 12, 8)
  np.testing.assert_allclose(features.project(tokens, dirs, pool="cls"),
                             tokens[:, 0] @ unit.T, atol=1e-5)
  one = features.project(maps, dirs[0])  # A (C,) vector is one direction.
  assert one.shape == (6, 1)


@pytest.mark.parametrize("directions, match", [
    (np.ones((3, 7)), "directions have width 7 but the activations have "
                      "shape \\(50, 32\\)"),
    (np.ones((2, 3, 32)), "directions has shape \\(2, 3, 32\\)"),
    (np.zeros((2, 32)), "direction 0 of directions is zero"),
    (np.full((2, 32), np.nan), "NaN or inf"),
    ("/no/dirs.npy", "no such file"),
])
def test_bad_directions_one_line(data, directions, match):
  with pytest.raises(ValueError, match=match) as e:
    features.label_directions(directions, data.acts[:50], data.p[:50])
  assert "\n" not in str(e.value) and len(str(e.value)) <= 300


def test_bad_label_input_one_line(data):
  dirs = data.directions
  checks = [
      (lambda: features.label_directions(dirs, data.acts, data.p[:10]),
       "expected \\(N, M\\) with N=8192"),
      (lambda: features.label_directions(dirs, data.acts, data.p,
                                         kernel="nope"), "kernel='nope'"),
      (lambda: features.label_directions(dirs, data.acts, data.p,
                                         concepts=["a"]),
       "concepts has 1 names"),
      (lambda: features.label_units(data.acts, data.p, kernel="nope"),
       "kernel='nope'"),
  ]
  for call, match in checks:
    with pytest.raises(ValueError, match=match) as e:
      call()
    assert "\n" not in str(e.value) and len(str(e.value)) <= 300
