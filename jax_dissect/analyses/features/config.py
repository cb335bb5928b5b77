"""Options of the features analysis and their checks (one-line errors).

`get_config()` lists every option with its default (each one a flag of
`scripts/analyze.py --analysis=features`); `check` turns a config into
`Settings` and the per-layer sizes, raising one-line ValueErrors for bad
values before any model is loaded or trained.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import ml_collections
import numpy as np

from jax_dissect import similarity
from jax_dissect.analyses.features import labels as labels_lib
from jax_dissect.analyses.features import model
from jax_dissect.analyses.scoring import simulation
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

GIB = 2**30


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layers = ()  # Layers to train an SAE on (default: all the run's layers).
  c.num_features = 0  # Features per SAE; 0: expansion x the layer's channels.
  c.expansion = 4.0  # Features per channel when num_features is 0.
  c.k = 0  # Non-zero codes per row; 0: min(32, C // 8, num_features).
  # Rows a training sees (whole passes over the layer's rows, at least one).
  c.training_rows = 2**20
  c.batch_size = 4096  # Rows per training step.
  c.lr = 0.0  # Adam's rate; 0: 2e-4 sqrt(16384 / F), at most 2e-3.
  c.seed = 0  # Seed of the SAE (weights, row order) and held-out split.
  # Train on every position (conv) or token of the layer's maps, re-running
  # the target on the probe images; False: on the run's pooled activations.
  c.positions = False
  # Save the per-position maps in the run's cache (after a disk estimate) so
  # that training passes and reruns read them instead of the target.
  c.cache_positions = False
  # An image's feature activation from its positions' codes: max, mean, cls.
  c.feature_pool = "max"
  c.memory_gb = 1.0  # Per-position maps held in memory up to this size.
  c.max_cache_gb = 20.0  # cache_positions refuses maps larger than this.
  c.image_batch_size = 0  # Images per target batch (0: the run's).
  c.num_permutations = 100  # Null draws B of each label's p-value.
  c.split = "half"  # Held-out images: half, all or a fraction in (0, 1).
  c.alpha = 0.05  # Significance level of the summary's q < alpha share.
  c.presence_a = simulation.DEFAULT_PRESENCE_A  # Presence slope a.
  c.presence_b = simulation.DEFAULT_PRESENCE_B  # Presence offset b.
  c.linear = False  # Also a linear explanation of each feature (slower).
  # A .npy file of (D, C) directions to label in each chosen layer's space.
  c.directions = ""
  c.sae = True  # Train (or load) the SAEs; False: label only --directions.
  return c


@dataclasses.dataclass(frozen=True)
class Settings:
  """Checked options (see get_config); sizes are bytes."""
  num_features: int = 0
  expansion: float = 4.0
  k: int = 0
  training_rows: int = 2**20
  batch_size: int = 4096
  lr: float = 0.0
  seed: int = 0
  positions: bool = False
  cache_positions: bool = False
  feature_pool: str = "max"
  memory_bytes: int = GIB
  max_cache_bytes: int = 20 * GIB
  image_batch_size: int = 0
  num_permutations: int = 100
  split: str | float = "half"
  alpha: float = 0.05
  presence_a: float = simulation.DEFAULT_PRESENCE_A
  presence_b: float = simulation.DEFAULT_PRESENCE_B
  linear: bool = False
  directions: str = ""
  sae: bool = True


@dataclasses.dataclass(frozen=True)
class LayerPlan:
  """What the analysis does for one layer: its width C and SAE size F."""
  layer: str
  width: int
  num_features: int
  k: int


def _boolean(name: str, value: Any) -> bool:
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, str) and value.lower() in ("true", "false"):
    return value.lower() == "true"
  raise ValueError(f"{name}={value!r} is not true or false")


def settings_from(config) -> Settings:
  """The options as Settings, each checked (one-line ValueErrors)."""
  num_features = options.integer("num_features", config.num_features)
  if num_features < 0:
    raise ValueError(f"num_features={num_features} must be >= 1 (or 0: "
                     "expansion x the layer's channels)")
  pool = options.choice("feature_pool", config.feature_pool, model.POOLS)
  directions = str(config.directions or "").strip()
  return Settings(
      num_features=num_features,
      expansion=options.real("expansion", config.expansion, 0.0,
                             low_open=True),
      k=options.integer("k", config.k, minimum=0),
      training_rows=options.integer("training_rows", config.training_rows,
                                    minimum=1),
      batch_size=options.integer("batch_size", config.batch_size, minimum=1),
      lr=options.real("lr", config.lr, 0.0),
      seed=options.integer("seed", config.seed),
      positions=_boolean("positions", config.positions),
      cache_positions=_boolean("cache_positions", config.cache_positions),
      feature_pool=pool,
      memory_bytes=int(options.real("memory_gb", config.memory_gb, 0.0,
                                    low_open=True) * GIB),
      max_cache_bytes=int(options.real("max_cache_gb", config.max_cache_gb,
                                       0.0) * GIB),
      image_batch_size=options.integer("image_batch_size",
                                       config.image_batch_size, minimum=0),
      num_permutations=options.integer("num_permutations",
                                       config.num_permutations, minimum=1),
      split=simulation.parse_split(config.split),
      alpha=options.real("alpha", config.alpha, 0.0, 1.0, low_open=True,
                         high_open=True),
      presence_a=options.real("presence_a", config.presence_a, 0.0,
                              low_open=True),
      presence_b=options.real("presence_b", config.presence_b),
      linear=_boolean("linear", config.linear),
      directions=directions,
      sae=_boolean("sae", config.sae))


def num_features_for(settings: Settings, width: int) -> int:
  """F of a layer of `width` channels: num_features, or expansion x C."""
  if settings.num_features:
    return settings.num_features
  return max(1, int(round(settings.expansion * width)))


def check(results: results_lib.Run, config
          ) -> tuple[Settings, list[LayerPlan], np.ndarray | None]:
  """Checks the options against the run, before any work.

  Returns:
    (settings, one LayerPlan per chosen layer, the (D, C) directions or
    None).

  Raises:
    ValueError: one line: a bad option value, an unknown layer, k larger
      than a layer's num_features, a directions file that cannot be read or
      whose width is not the chosen layers', a run without concepts.
  """
  settings = settings_from(config)
  layers = options.names_list("layers", config.layers) or results.layers
  for layer in layers:
    results.check_layer(layer)
  if not settings.sae and not settings.directions:
    raise ValueError("sae=False and no directions: nothing to do; pass "
                     "--directions=FILE.npy or leave sae on")
  if not results.concepts:
    raise ValueError(f"{results.path} has no concepts.txt; the features are "
                     "labelled with the run's concept set")
  similarity.get_kernel(results.similarity_fn)
  num_images = len(results.image_ids) or results.concept_activations(
  ).shape[0]
  simulation.split_indices(num_images, settings.split, settings.seed)
  plans = []
  for layer in layers:
    width = int(results.activations(layer).shape[1])
    f = num_features_for(settings, width)
    if settings.k > f:
      raise ValueError(f"k={settings.k} is larger than num_features={f} of "
                       f"layer {layer!r}; k must be between 1 and "
                       "num_features")
    plans.append(LayerPlan(layer, width, f, settings.k))
  directions = None
  if settings.directions:
    path = os.path.expanduser(settings.directions)
    if not path.endswith(".npy"):
      raise ValueError(f"directions={settings.directions!r} is not a .npy "
                       "file of (D, C) directions")
    directions = labels_lib.load_directions(path)
    wrong = [p for p in plans if p.width != directions.shape[1]]
    if wrong:
      widths = ", ".join(f"{p.layer} {p.width}" for p in plans)
      raise ValueError(
          f"directions {settings.directions!r} have width "
          f"{directions.shape[1]} but the layers' widths are {widths[:120]}; "
          "choose --layers whose width C matches the (D, C) file")
  return settings, plans, directions
