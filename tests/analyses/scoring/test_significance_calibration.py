"""Label p-values under realistic nulls, and their power for shared concepts.

A calibrated test gives p-values uniform on (0, 1] when H0 holds: median
near 0.5 and 5% at or below 0.05. The nulls here are realistic in the way that
matters for the layer prior of soft_wpmi and wpmi: the neurons of a layer
are strongly correlated with each other (a random ResNet-18 on real photos,
or neurons sharing latent factors), while P is independent of them.

Neurons that are correlated share their top images, so their p-values in
one draw of the data are strongly dependent (the median p-value of one
layer varies by about 0.15 from draw to draw). The KS tests therefore use
one neuron per independent draw; medians and fractions below 0.05 are
pooled over all neurons of all draws.
"""

import os

import numpy as np
import pytest
from scipy import stats

from configs import shared_data
from jax_dissect.analyses.scoring import significance
from jax_dissect.data import preprocess
from jax_dissect.models import capture as activations
from jax_dissect.models import get_model

B = 99
NUM_IMAGES = 256
NUM_CONCEPTS = 100
NUM_DRAWS = 40  # Independent draws of P's image order (ResNet).
KS_ALPHA = 1e-3
# Pool null neurons (the default is 4096): the p-values are exact for any
# pool; a smaller one keeps the many calls below fast.
POOL = 1024


def _ks_uniform(p_values, num_permutations=B):
  """KS test of permutation p-values on {1..B+1}/(B+1) against uniform.

  p - U/(B+1), U ~ Uniform(0, 1), is exactly Uniform(0, 1) when p is
  uniform on that grid.
  """
  u = np.random.default_rng(123).uniform(size=len(p_values))
  return stats.kstest(np.asarray(p_values) - u / (num_permutations + 1),
                      "uniform")


def _summary(p_values):
  # p <= 0.05: B = 99 puts p on a grid of 0.01, where a uniform p is
  # <= 0.05 with probability 5% (and < 0.05 with 4%).
  return (f"median {np.median(p_values):.3f}, "
          f"{np.mean(p_values <= 0.05):.3f} at or below 0.05")


# ----------------------------------------------------------------------------
# A random ResNet-18 on real photos, and a P independent of it.
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_features():
  """Pooled layer2 of two random ResNet-18s (seeds 0, 1): A and P's source.

  NUM_IMAGES photos of the shared ImageNet sample at 64x64.
  """
  folder = os.path.join(shared_data.require(), "imagenet_sample")
  names = sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))
  pick = np.sort(np.random.default_rng(0).choice(len(names), NUM_IMAGES,
                                                 replace=False))
  transform = preprocess.ImageTransform(resize=64, crop=64)
  images = np.stack([transform(preprocess.load_rgb(
      os.path.join(folder, names[i]))) for i in pick])
  out = []
  for seed in (0, 1):
    module, variables = get_model("resnet18").load(weights="random",
                                                   seed=seed)
    out.append(np.asarray(activations.capture_pooled(
        module, variables, images, ["layer2"], pool="avg")["layer2"],
                          np.float32))
  return out


def _clip_like_p(features, rng, num_concepts=NUM_CONCEPTS):
  """A P with CLIP's range and correlated concepts: cosine similarities of
  image features with random concept directions, scaled to 0.22 +- 0.03."""
  f = features - features.mean(0)
  w = rng.standard_normal((f.shape[1], num_concepts))
  cos = (f / np.linalg.norm(f, axis=1, keepdims=True)) @ (
      w / np.linalg.norm(w, axis=0))
  return (0.22 + 0.03 * cos / cos.std()).astype(np.float32)


@pytest.fixture(scope="module")
def resnet_layer(photo_features):
  a, features = photo_features
  a = a[:, a.std(0) > 0]  # Constant neurons get p = 1 by definition.
  p = _clip_like_p(features, np.random.default_rng(1))
  corr = np.corrcoef(a.T)[np.triu_indices(a.shape[1], 1)]
  return {"a": a, "p": p, "median_corr": float(np.median(corr))}


def _shuffled_p_pvalues(a, p, name, draws, seed):
  """(draws, K) p-values of the layer against P with its rows in `draws`
  random orders: P is then independent of the network. One call per draw:
  the layer prior of the kernel spans the real (correlated) layer."""
  rng = np.random.default_rng(seed)
  return np.stack([
      significance.label_pvalues(a, p[rng.permutation(len(p))], name,
                                 num_permutations=B, seed=seed + d,
                                 pool_size=POOL).p_values
      for d in range(draws)])


def _assert_calibrated(p, name):
  """p: (draws, K) p-values; the draws are independent, neurons not."""
  draws, k = p.shape
  # One neuron per draw (a different one each time): independent p-values.
  one = p[np.arange(draws), (np.arange(draws) * 37) % k]
  ks = _ks_uniform(one)
  print(f"{name}: KS D={ks.statistic:.3f} p={ks.pvalue:.3g} over {draws} "
        f"draws; all neurons: {_summary(p)}")
  assert ks.pvalue > KS_ALPHA, (ks, _summary(p))
  assert 0.4 < np.median(p) < 0.6, _summary(p)
  assert 0.02 < np.mean(p <= 0.05) < 0.09, _summary(p)


def test_random_resnet_neurons_are_correlated(resnet_layer):
  # What makes the null realistic: correlated neurons.
  assert resnet_layer["median_corr"] > 0.3, resnet_layer["median_corr"]


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi"])
def test_random_resnet_pvalues_are_uniform(resnet_layer, name):
  p = _shuffled_p_pvalues(resnet_layer["a"], resnet_layer["p"], name,
                          NUM_DRAWS, seed=2)
  _assert_calibrated(p, name)


def test_random_resnet_cos_pvalues_are_uniform(resnet_layer):
  """cos_similarity has no prior: a neuron's p-value depends on its own
  column only, so the draws can share one call (B re-runs of the kernel)."""
  a, p = resnet_layer["a"], resnet_layer["p"]
  rng = np.random.default_rng(2)
  n, k = a.shape
  stacked = np.concatenate([a[rng.permutation(n)] for _ in range(NUM_DRAWS)],
                           axis=1)
  res = significance.label_pvalues(stacked, p, "cos_similarity",
                                   num_permutations=B, seed=2)
  _assert_calibrated(res.p_values.reshape(NUM_DRAWS, k), "cos_similarity")


# ----------------------------------------------------------------------------
# Synthetic correlated neurons: a few latent factors shared by the layer.
# ----------------------------------------------------------------------------


def _factor_layer(rng, n, k, num_factors=3, noise=0.5):
  """Neurons = positive mixtures of a few latent factors + noise: every
  pair of neurons correlated (median ~0.6), as in a random ResNet."""
  factors = rng.standard_normal((n, num_factors))
  loadings = rng.uniform(0.2, 1.0, size=(num_factors, k))
  a = factors @ loadings
  a /= a.std(0)
  return (a + noise * rng.standard_normal(a.shape)).astype(np.float32)


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi", "cos_similarity"])
def test_correlated_synthetic_neurons_get_uniform_pvalues(name):
  rng = np.random.default_rng(3)
  n, k, draws = 300, 64, NUM_DRAWS
  if name == "cos_similarity":
    draws = 20  # B re-runs per draw.
  p_values = []
  for d in range(draws):
    a = _factor_layer(rng, n, k)
    p = _clip_like_p(rng.standard_normal((n, 32)), rng)  # Independent of A.
    p_values.append(significance.label_pvalues(
        a, p, name, num_permutations=B, seed=d, pool_size=POOL).p_values)
  corr = np.corrcoef(a.T)[np.triu_indices(k, 1)]
  assert np.median(corr) > 0.4, np.median(corr)
  _assert_calibrated(np.stack(p_values), name)


# ----------------------------------------------------------------------------
# Power: planted neurons, alone or several sharing one concept.
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["soft_wpmi", "wpmi"])
@pytest.mark.parametrize("noise", [1.0, 1.5])
def test_planted_concepts_are_found_when_neurons_share_them(
    resnet_layer, name, noise):
  """8 neurons planted with one concept and 8 with one concept each, in the
  random ResNet layer, with a P whose concepts are correlated.

  A planted neuron is P's standardized concept column plus noise (noise
  1.5: correlation 0.55 with its concept). The layer prior of the kernel
  lowers the score of a concept that 8 neurons share (by log 8 at lam = 1)
  and of concepts the ResNet's correlated neurons share; the default
  statistic does not depend on the other neurons.
  """
  a, p = resnet_layer["a"], resnet_layer["p"]
  rng = np.random.default_rng(5)
  z = (p - p.mean(0)) / p.std(0)
  concepts = rng.choice(p.shape[1], 9, replace=False)
  truth = np.concatenate([np.repeat(concepts[0], 8), concepts[1:]])
  planted = z[:, truth] + noise * rng.standard_normal((len(p), 16))
  layer = np.concatenate([planted, a], axis=1).astype(np.float32)
  res = significance.label_pvalues(layer, p, name, num_permutations=B,
                                   seed=6)
  shared, single = res.p_values[:8], res.p_values[8:16]
  print(f"{name}, noise {noise}: shared {shared}, single {single}")
  assert np.all(shared < 0.05), shared
  assert np.all(single < 0.05), single
  # The concept tested is the planted one or a near-duplicate of it (P's
  # concepts are random directions in a 128-d feature space: some pairs
  # correlate above 0.9, which this noise cannot tell apart).
  corr = np.corrcoef(p.T)[res.labels[:16], truth]
  assert np.all(corr > 0.8), (res.labels[:16], truth, corr)
  assert np.mean(res.labels[:16] == truth) >= 0.5
