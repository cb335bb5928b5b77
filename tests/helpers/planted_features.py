"""Planted superposition data for the features tests.

Many sparse non-negative concept activities are mixed into fewer neurons
through random dense unit directions (superposition), and a synthetic P
marks each concept's presence the way CLIP's image-text similarities
would: a baseline, a small lift where the concept is present, noise.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tests.helpers import synthetic_run


@dataclasses.dataclass
class Planted:
  """acts (N, C) or maps; p (N, M); presence (N, M) bool per image;
  directions (M, C) unit rows."""
  acts: np.ndarray
  p: np.ndarray
  presence: np.ndarray
  directions: np.ndarray


def _p(presence: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  return (0.2 + 0.06 * presence +
          0.01 * rng.standard_normal(presence.shape)).astype(np.float32)


def _directions(m: int, c: int, rng: np.random.Generator) -> np.ndarray:
  d = rng.standard_normal((m, c))
  return d / np.linalg.norm(d, axis=1, keepdims=True)


def superposition(n: int = 8192, num_concepts: int = 64, width: int = 32,
                  density: float = 0.04, noise: float = 0.02,
                  seed: int = 0) -> Planted:
  """Rows: concept m is present in an image with probability `density`,
  with an amplitude uniform in [0.5, 1.5]; A = S @ directions + noise."""
  rng = np.random.default_rng(seed)
  presence = rng.random((n, num_concepts)) < density
  s = presence * rng.uniform(0.5, 1.5, presence.shape)
  d = _directions(num_concepts, width, rng)
  acts = s @ d + noise * rng.standard_normal((n, width))
  return Planted(acts.astype(np.float32), _p(presence, rng), presence,
                 d.astype(np.float32))


def conv_maps(n: int = 1024, side: int = 4, num_concepts: int = 64,
              width: int = 32, density: float = 0.01, noise: float = 0.02,
              seed: int = 0) -> Planted:
  """(n, side, side, width) maps: concepts present at single positions
  (probability `density` each); an image has a concept where any of its
  positions has it."""
  rng = np.random.default_rng(seed)
  at = rng.random((n, side, side, num_concepts)) < density
  s = at * rng.uniform(0.5, 1.5, at.shape)
  d = _directions(num_concepts, width, rng)
  maps = s @ d + noise * rng.standard_normal((n, side, side, width))
  presence = at.any(axis=(1, 2))
  return Planted(maps.astype(np.float32), _p(presence, rng), presence,
                 d.astype(np.float32))


def named_concepts(acts: np.ndarray, index: np.ndarray,
                   presence: np.ndarray, min_corr: float = 0.5
                   ) -> tuple[int, float]:
  """How well units' labels name planted concepts.

  Args:
    acts: (N, U) per-image unit activations.
    index: (U,) each unit's label (concept index; -1: none).
    presence: (N, M) planted presence.
    min_corr: a unit names its label's concept when its activation
      correlates with that concept's presence at least this much.

  Returns:
    (distinct concepts named by some unit, fraction of labelled units that
    name their label's concept).
  """
  named, hits, labelled = set(), 0, 0
  for u, m in enumerate(index):
    if m < 0 or np.std(acts[:, u]) == 0:
      continue
    labelled += 1
    if np.corrcoef(acts[:, u], presence[:, m])[0, 1] >= min_corr:
      named.add(int(m))
      hits += 1
  return len(named), hits / max(labelled, 1)


def write_run(path, data: Planted, p: np.ndarray | None = None,
              seed: int = 0) -> str:
  """Writes planted rows as a describe_neurons run at `path` (one layer,
  "layer", its neurons labelled with the real soft_wpmi kernel; concepts
  c0..c{M-1}); `p` replaces the planted P (e.g. shuffled). Returns path."""
  rng = np.random.default_rng(seed)
  n, m = data.p.shape
  world = {"concepts": [f"c{i}" for i in range(m)],
           "image_ids": [f"img/{i:05d}.png" for i in range(n)],
           "P": data.p if p is None else p,
           "image_embeddings": rng.standard_normal((n, 8)).astype(np.float32),
           "text_embeddings": rng.standard_normal((m, 8)).astype(np.float32),
           "activations": {"layer": data.acts}}
  return synthetic_run.write_results(str(path), world)
