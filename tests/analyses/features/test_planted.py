"""Planted superposition: SAE features name the concepts, neurons do not.

64 sparse non-negative concept activities are mixed into 32 neurons through
random dense directions (tests/helpers/planted_features.py). Every neuron then
carries a little of every concept, so no neuron's label can name a concept
its activation follows; an SAE trained with its default hyper-parameters
separates them again, and its features' labels (codes vs P) name the
planted concepts. The devices are set to 1 for speed (the 8-device
equality is tested in test_training.py).
"""

import numpy as np
import pytest

from jax_dissect import features
from tests.helpers import planted_features as planted

NUM_CONCEPTS = 64


@pytest.fixture(scope="module")
def data():
  return planted.superposition(num_concepts=NUM_CONCEPTS, width=32)


@pytest.fixture(scope="module")
def sae(data):
  return features.train_sae(data.acts, 128, devices=1)


def test_fit_figures(sae):
  fit = sae.fit
  assert fit["measured_on"] == "all training rows"
  assert fit["rows"] == 8192
  assert fit["fraction_of_variance_explained"] > 0.8
  assert fit["mean_l0"] <= sae.k == 4  # Default k: min(32, C // 8, F).
  assert fit["dead_fraction"] < 0.1


@pytest.mark.parametrize("kernel", ["soft_wpmi", "cos_similarity"])
def test_features_name_planted_concepts_neurons_do_not(data, sae, kernel):
  labels = features.label_features(sae, data.acts, data.p, kernel=kernel)
  assert labels.scores.shape == (128, NUM_CONCEPTS)
  codes = sae.encode(data.acts)
  named, precision = planted.named_concepts(codes, labels.index,
                                            data.presence)
  # Measured (soft_wpmi): all 64 concepts named, by 55% of the features
  # (the other features split concepts: 128 features for 64 concepts).
  assert named >= 0.85 * NUM_CONCEPTS, (named, precision)
  assert precision >= 0.4, (named, precision)

  neurons = features.label_units(data.acts, data.p, kernel=kernel)
  n_named, n_precision = planted.named_concepts(data.acts, neurons.index,
                                                data.presence)
  # Measured: 0 concepts, 0 neurons (each neuron follows a concept at
  # correlation ~0.25 at best).
  assert n_named <= 0.1 * NUM_CONCEPTS, (n_named, n_precision)
  assert n_precision <= 0.1, (n_named, n_precision)


def test_labels_follow_p_not_chance(data, sae):
  """The null: with P's rows shuffled (concepts no longer match the
  images), the same features name (almost) no planted concept."""
  rng = np.random.default_rng(1)
  labels = features.label_features(sae, data.acts,
                                   data.p[rng.permutation(len(data.p))])
  named, _ = planted.named_concepts(sae.encode(data.acts), labels.index,
                                    data.presence)
  assert named <= 0.1 * NUM_CONCEPTS, named


def test_conv_maps_trained_per_position_pooled_by_max():
  """(B, H, W, C) maps: trained on every position, an image's code is the
  max over its positions; the features still name the concepts present in
  an image, while mean-pooled neurons do not."""
  maps = planted.conv_maps(num_concepts=NUM_CONCEPTS, width=32)
  sae = features.train_sae(maps.acts, 128, devices=1)
  assert sae.config["rows_seen"] >= 2**20
  labels = features.label_features(sae, maps.acts, maps.p)
  codes = sae.encode(maps.acts)  # (B, F), max over positions.
  assert codes.shape == (1024, 128)
  named, precision = planted.named_concepts(codes, labels.index,
                                            maps.presence)
  assert named >= 0.75 * NUM_CONCEPTS, (named, precision)
  pooled = maps.acts.mean(axis=(1, 2))
  neurons = features.label_units(pooled, maps.p)
  n_named, _ = planted.named_concepts(pooled, neurons.index, maps.presence)
  assert n_named <= 0.1 * NUM_CONCEPTS, n_named
