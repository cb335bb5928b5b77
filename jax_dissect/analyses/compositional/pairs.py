"""Compositional concepts (paper section 4.6): "c1 c2" labels for a neuron.

For each chosen neuron: take its `num_singles` best single concepts (100 in
the paper) under the run's kernel, embed every ordered pair "c1 c2" (c1 != c2)
with CLIP's text tower, P_pairs = image_embeddings @ pair_embeddings^T, and
score singles and pairs together with the same kernel on the neuron's layer.

The concept set of that call is the neuron's top singles plus their pairs, so
the softmax of (soft_)wpmi normalises over both and single and pair scores
are comparable; the kernel runs on all K neurons of the layer, so the prior
of (soft_)wpmi is the layer's, as in the run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np

from jax_dissect import similarity
from jax_dissect.clip import text_embed


def ordered_pairs(concepts: Sequence[str], separator: str = " ") -> list[str]:
  """All "c1<sep>c2" for c1 != c2 in `concepts`, c1-major order."""
  return [f"{a}{separator}{b}" for i, a in enumerate(concepts)
          for j, b in enumerate(concepts) if i != j]


# Bytes per pair string beyond its characters: the str object, its places in
# the pair list, the list of unique texts and their index dict.
_BYTES_PER_PAIR_TEXT = 200


def memory_estimate(num_images: int, num_neurons: int, num_singles: int,
                    dim: int, mean_concept_chars: float = 16.0) -> int:
  """Peak bytes of `compositional_concepts` for one unit (its largest step).

  With S = num_singles there are S (S - 1) pairs: their strings, their text
  embeddings (3 float32 copies of (pairs, D) in embedding), P of the pairs
  and of singles + pairs ((N, S + pairs) float32, twice), the kernel's
  copies of that P on the device and its softmax (3 more), and the scores
  (K, S + pairs).
  """
  pairs = num_singles * (num_singles - 1)
  columns = num_singles + pairs
  texts = pairs * (_BYTES_PER_PAIR_TEXT + 2 * mean_concept_chars + 1)
  embeddings = 3 * pairs * dim * 4
  p = 5 * num_images * columns * 4
  scores = 2 * num_neurons * columns * 4
  return int(texts + embeddings + p + scores)


def check_memory(num_images: int, num_neurons: int, num_singles: int,
                 dim: int, mean_concept_chars: float = 16.0,
                 available: int | None = None) -> int:
  """Raises a ValueError if a run cannot fit in the memory available.

  Args:
    num_images, num_neurons, num_singles, dim, mean_concept_chars: as in
      `memory_estimate`.
    available: bytes available (default: psutil's available memory).

  Returns:
    The estimate, in bytes.
  """
  if available is None:
    import psutil  # pylint: disable=g-import-not-at-top
    available = psutil.virtual_memory().available
  need = memory_estimate(num_images, num_neurons, num_singles, dim,
                         mean_concept_chars)
  if need <= available:
    return need
  fits, too_many = 1, num_singles  # The largest num_singles that fits.
  while too_many - fits > 1:
    mid = (fits + too_many) // 2
    if memory_estimate(num_images, num_neurons, mid, dim,
                       mean_concept_chars) <= available:
      fits = mid
    else:
      too_many = mid
  gib = 2**30
  raise ValueError(
      f"num_singles={num_singles} needs about {need / gib:.1f} GiB "
      f"({num_singles * (num_singles - 1)} pairs x {num_images} images) but "
      f"{available / gib:.1f} GiB is available; use num_singles <= {fits}"
      if fits >= 2 else
      f"num_singles={num_singles} needs about {need / gib:.1f} GiB but only "
      f"{available / gib:.1f} GiB is available, too little for any pair")


def compositional_concepts(
    activations: np.ndarray, concept_activations: np.ndarray,
    image_embeddings: np.ndarray, concepts: Sequence[str],
    units: Sequence[int], text_embed_fn: text_embed.TextEmbedFn, *,
    similarity_fn: str = "soft_wpmi",
    kernel_kwargs: Mapping[str, Any] | None = None, num_singles: int = 100,
    top_n: int = 5, separator: str = " ", seed: int = 0,
) -> list[dict[str, Any]]:
  """Best single and pair concepts of chosen neurons.

  Args:
    activations: A of the layer, (N, K).
    concept_activations: P of the single concepts, (N, M).
    image_embeddings: the probe images' CLIP embeddings, (N, D), L2-normalised
      (the rows P was computed from).
    concepts: the M single concepts.
    units: neurons (column indices of A) to describe.
    text_embed_fn: CLIP's text tower as list[str] -> (n, D) normalised.
    similarity_fn: kernel name.
    kernel_kwargs: the kernel's hyper-parameters.
    num_singles: best single concepts per neuron to combine (paper: 100).
    top_n: best pairs to report per neuron.
    separator: joins the two concepts of a pair.
    seed: key seed for rank_reorder.

  Returns:
    One dict per unit: unit, single_label / single_score (best single of the
    whole concept set), best_single / best_single_score (best single in the
    combined call), pairs (top_n of {"concept", "similarity"}, best first),
    best_pair / best_pair_score, pair_gain = best_pair_score -
    best_single_score.
  """
  a = np.asarray(activations, np.float32)
  p = np.asarray(concept_activations, np.float32)
  img = text_embed.normalize_rows(image_embeddings)
  n, k = a.shape
  if p.shape[0] != n or img.shape[0] != n:
    raise ValueError(f"activations {a.shape}, concept_activations {p.shape} "
                     f"and image_embeddings {img.shape} must share N")
  if p.shape[1] != len(concepts):
    raise ValueError(f"concept_activations has {p.shape[1]} columns but there "
                     f"are {len(concepts)} concepts")
  if not units:
    raise ValueError("no units given: choose the neurons to describe")
  bad = [u for u in units if not 0 <= int(u) < k]
  if bad:
    raise ValueError(f"units {bad} out of range: the layer has {k} neurons "
                     f"(0..{k - 1})")
  if num_singles < 2:
    raise ValueError(f"num_singles must be >= 2 to form pairs; got "
                     f"{num_singles}")
  kwargs = dict(kernel_kwargs or {})
  singles = np.asarray(similarity.compute(similarity_fn, a, p, seed=seed,
                                          **kwargs))
  _, top = similarity.top_concepts(singles[np.asarray(units, np.int64)],
                                   num_singles)
  out = []
  for unit, cols in zip(units, top):
    names = [concepts[c] for c in cols]
    pairs = ordered_pairs(names, separator)
    logging.info("compositional: unit %d, %d singles, %d pairs", unit,
                 len(names), len(pairs))
    pair_p = img @ text_embed.embed_unique(text_embed_fn, pairs).T
    combined = np.concatenate([p[:, cols], pair_p], axis=1)
    s = np.asarray(similarity.compute(similarity_fn, a, combined, seed=seed,
                                      **kwargs))[int(unit)]
    s_single, s_pair = s[:len(names)], s[len(names):]
    best_single = int(np.argmax(s_single))
    order = np.argsort(-s_pair, kind="stable")[:top_n]
    best = {"unit": int(unit),
            "single_label": concepts[int(np.argmax(singles[unit]))],
            "single_score": float(np.max(singles[unit])),
            "best_single": names[best_single],
            "best_single_score": float(s_single[best_single]),
            "pairs": [{"concept": pairs[j], "similarity": float(s_pair[j])}
                      for j in order]}
    best["best_pair"] = best["pairs"][0]["concept"]
    best["best_pair_score"] = best["pairs"][0]["similarity"]
    best["pair_gain"] = best["best_pair_score"] - best["best_single_score"]
    out.append(best)
  return out
