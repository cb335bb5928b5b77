"""Labelling features and user directions with a similarity kernel.

A unit need not be a neuron: any (N, U) matrix of per-image activations
can take A's place in a kernel. Two kinds are labelled here:

- the features of a trained SAE: their codes on the probe images (an
  image's code is the max, or mean, over its positions for maps);
- user directions (D, C), e.g. from a .npy file: the activations' unit
  projections onto each direction, A @ d / |d| (per position for maps,
  then pooled as CLIP-Dissect pools neurons: mean by default).

`similarity.compute` scores the (N, U) activations against P (N, M) with
the named kernel; units that are zero on every probe image (SAE features
that never fire) carry no ranking, so they are left out of the kernel's
call (and of the (soft_)wpmi prior) and get NaN scores and label -1.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from jax_dissect import similarity
from jax_dissect.analyses.features import model

DEFAULT_KERNEL = "soft_wpmi"


@dataclasses.dataclass
class Labels:
  """Labels of U units (features or directions) against M concepts.

  Attributes:
    scores: (U, M) float32 kernel scores; NaN rows for inactive units.
    index: (U,) int, the best concept of each unit (-1 if inactive).
    score: (U,) float32, its score (NaN if inactive).
    active: (U,) bool, units non-zero on at least one probe image.
    names: (U,) best concept names, if concepts were given ("" if
      inactive), else None.
    kernel: the kernel's name.
  """
  scores: np.ndarray
  index: np.ndarray
  score: np.ndarray
  active: np.ndarray
  names: list[str] | None
  kernel: str

  def top(self, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values (U, n), indices (U, n)) of each unit's n best concepts, best
    first; inactive units get NaN values and -1 indices."""
    vals = np.full((self.scores.shape[0], min(n, self.scores.shape[1])),
                   np.nan, np.float32)
    idx = np.full(vals.shape, -1, np.int64)
    if self.active.any():
      v, i = similarity.top_concepts(self.scores[self.active], n)
      vals[self.active], idx[self.active] = v, i
    return vals, idx


def _check_kernel(kernel: str) -> None:
  if kernel not in similarity.names():
    raise ValueError(f"kernel={kernel!r}; allowed: "
                     f"{', '.join(similarity.names())}")


def _check_concepts(concepts: Sequence[str] | None, m: int) -> None:
  if concepts is not None and len(concepts) != m:
    raise ValueError(f"concepts has {len(concepts)} names but "
                     f"concept_activations has M={m} columns")


def _concept_matrix(concept_activations: Any, n: int) -> np.ndarray:
  p = model.as_array(concept_activations, "concept_activations")
  if p.ndim != 2 or p.shape[0] != n:
    raise ValueError(f"concept_activations has shape {tuple(p.shape)}; "
                     f"expected (N, M) with N={n} probe images (the first "
                     "axis of the activations)")
  return p


def label_units(units: np.ndarray, concept_activations: Any, *,
                kernel: str = DEFAULT_KERNEL,
                concepts: Sequence[str] | None = None, seed: int = 0,
                devices: Any = None, **hyper) -> Labels:
  """Labels the columns of a (N, U) activation matrix with `kernel`.

  Args:
    units: (N, U) per-image activations of U units.
    concept_activations: P, (N, M).
    kernel: a similarity kernel (similarity.names()).
    concepts: optional M concept names.
    seed: seed of a keyed kernel (rank_reorder).
    devices: devices of the kernel (similarity.compute's option).
    **hyper: the kernel's hyper-parameters.

  Returns:
    Labels (see the class).
  """
  _check_kernel(kernel)
  units = np.asarray(units, np.float32)
  p = _concept_matrix(concept_activations, units.shape[0])
  _check_concepts(concepts, p.shape[1])
  u, m = units.shape[1], p.shape[1]
  active = np.any(units != 0, axis=0)
  scores = np.full((u, m), np.nan, np.float32)
  if active.any():
    scores[active] = np.asarray(similarity.compute(
        kernel, units[:, active], p, seed=seed, devices=devices, **hyper))
  index = np.full(u, -1, np.int64)
  score = np.full(u, np.nan, np.float32)
  if active.any():
    index[active] = np.argmax(scores[active], axis=1)
    score[active] = scores[active, index[active]]
  names = None
  if concepts is not None:
    names = [concepts[i] if i >= 0 else "" for i in index]
  return Labels(scores=scores, index=index, score=score, active=active,
                names=names, kernel=kernel)


def label_features(sae: model.SparseAutoencoder, activations: Any,
                   concept_activations: Any, *,
                   kernel: str = DEFAULT_KERNEL, pool: str = "max",
                   concepts: Sequence[str] | None = None, seed: int = 0,
                   devices: Any = None, **hyper) -> Labels:
  """Labels every feature of a trained SAE on a layer's activations.

  The features' codes on the probe images, (N, F), are the kernel's
  activations.

  Args:
    sae: the trained SparseAutoencoder.
    activations: the layer's activations of the N probe images: (N, C),
      (N, T, C) or (N, H, W, C) (numpy, jax or a .npy path).
    concept_activations: P, (N, M).
    kernel: a similarity kernel name (default soft_wpmi).
    pool: an image's feature activation from its positions' codes: "max"
      (default), "mean" or "cls" (token maps).
    concepts: optional M concept names.
    seed, devices, **hyper: passed to similarity.compute.

  Returns:
    Labels with U = F features: scores (F, M), best concept per feature.
  """
  _check_kernel(kernel)
  x = model.as_array(activations)
  p = _concept_matrix(concept_activations, x.shape[0] if x.ndim else 0)
  _check_concepts(concepts, p.shape[1])
  codes = sae.encode(x, pool=pool)
  return label_units(codes, p, kernel=kernel, concepts=concepts, seed=seed,
                     devices=devices, **hyper)


def load_directions(directions: Any) -> np.ndarray:
  """Directions as a (D, C) float32 array (a (C,) vector is one row).

  Args:
    directions: an array or a .npy path.
  """
  d = model.as_array(directions, "directions")
  if d.ndim == 1:
    d = d[None]
  if d.ndim != 2 or 0 in d.shape:
    raise ValueError(f"directions has shape {tuple(d.shape)}; expected a "
                     "(D, C) array of D directions in the layer's C-channel "
                     "space")
  d = np.asarray(d, np.float32)
  if not np.isfinite(d).all():
    raise ValueError("directions contain NaN or inf values; all values must "
                     "be finite")
  norms = np.linalg.norm(d, axis=1)
  if (norms == 0).any():
    raise ValueError(f"direction {int(np.argmin(norms))} of directions is "
                     "zero; every direction needs a non-zero norm")
  return d


def project(activations: Any, directions: Any, *, pool: str = "mean",
            normalize: bool = True) -> np.ndarray:
  """Projections of a layer's activations onto directions.

  Args:
    activations: (N, C), (N, T, C) or (N, H, W, C) (or a .npy path).
    directions: (D, C) (or (C,), or a .npy path).
    pool: for maps, from the positions' projections: "mean" (default,
      CLIP-Dissect's pooling of conv neurons; equal to projecting the
      mean-pooled map), "max" or "cls" (token maps: the first token).
    normalize: project onto unit directions (d / |d|); else onto d as given.

  Returns:
    (N, D) float32.
  """
  d = load_directions(directions)
  x = model.as_array(activations)
  if x.ndim not in (2, 3, 4) or x.shape[-1] != d.shape[1]:
    raise ValueError(
        f"directions have width {d.shape[1]} but the activations have shape "
        f"{tuple(x.shape)}; directions must be (D, C) with C = the "
        f"activations' last axis ({x.shape[-1] if x.ndim else '?'})")
  model.check_pool(pool, x.ndim)
  if pool is None:
    raise ValueError("pool=None; project needs one value per image: "
                     "'mean', 'max' or 'cls'")
  if normalize:
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
  out = []
  n = x.shape[0]
  positions = int(np.prod(x.shape[1:-1])) if x.ndim > 2 else 1
  step = max(1, 65536 // positions)
  for lo in range(0, n, step):
    block = np.asarray(x[lo:lo + step], np.float32)
    if x.ndim == 2:
      out.append(block @ d.T)
      continue
    if pool == "cls":
      out.append(block[:, 0] @ d.T)
      continue
    proj = block.reshape(block.shape[0], positions, -1) @ d.T
    out.append(proj.max(axis=1) if pool == "max" else proj.mean(axis=1))
  return np.concatenate(out).astype(np.float32)


def label_directions(directions: Any, activations: Any,
                     concept_activations: Any, *,
                     kernel: str = DEFAULT_KERNEL, pool: str = "mean",
                     normalize: bool = True,
                     concepts: Sequence[str] | None = None, seed: int = 0,
                     devices: Any = None, **hyper) -> Labels:
  """Labels user directions (D, C) in a layer's space.

  The activations are projected onto the directions (see `project`) and
  the (N, D) projections are labelled with the kernel like neurons. A
  direction's sign matters: d and -d rank the images in opposite orders.

  Args:
    directions: (D, C) array or .npy path (a (C,) vector is one direction).
    activations: the layer's activations (N, C), (N, T, C) or (N, H, W, C).
    concept_activations: P, (N, M).
    kernel: a similarity kernel name (default soft_wpmi).
    pool: see `project` (default "mean").
    normalize: see `project`.
    concepts: optional M concept names.
    seed, devices, **hyper: passed to similarity.compute.

  Returns:
    Labels with U = D directions.

  Raises:
    ValueError: (one line, before any work) directions of the wrong width
      or shape, a zero direction, P with the wrong number of rows, an
      unknown kernel.
  """
  _check_kernel(kernel)
  x = model.as_array(activations)
  p = _concept_matrix(concept_activations, x.shape[0] if x.ndim else 0)
  _check_concepts(concepts, p.shape[1])
  proj = project(x, directions, pool=pool, normalize=normalize)
  return label_units(proj, p, kernel=kernel, concepts=concepts, seed=seed,
                     devices=devices, **hyper)
