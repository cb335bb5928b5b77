"""Stage 3: pick each neuron's best candidate concepts.

selection="generation" (the original's):

1. for each candidate c, `num_generated` images of
   prompt_template.format(c) from a text-to-image callable
   `generator(prompt, num_images, seed) -> (n, H, W, 3)` images (uint8, or
   float in [0, 1], or a list of PIL images);
2. the target is run on all of a neuron's generated images, which are
   ranked by the neuron's pooled activation (position 0 = most
   activating); candidate c's ranks are the positions of its images;
3. topk_sq_mean[c] = mean of the squares of c's `beta` best (smallest)
   ranks — lower is better (a candidate without images gets M + 1);
4. clip_weight[c] = mean CLIP cosine similarity between the neuron's top
   images (stage 1) and c's generated images that are among the
   `clip_top_k` most activating of all generated images (-1 if none are);
5. the candidates sorted by topk_sq_mean (best first, ties in candidate
   order) get concept_rank = M - position, so the best has M and the worst
   1; combined[c] = concept_rank[c] * clip_weight[c]; the labels are the
   candidates by combined score, highest first (ties in candidate order).

selection="clip_dissect": the candidates of all chosen neurons are embedded
with CLIP's text tower, P = probe image embeddings @ text embeddings.T,
and `similarity.compute(similarity_fn, A, P)` scores them against
the layer's activations A on the probe set (all neurons of the layer, so
soft_wpmi's prior is the layer's); each neuron's labels are its own
candidates by that score. No generator is needed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from jax_dissect import clip as clip_lib
from jax_dissect import similarity
from jax_dissect.analyses.dnd import candidates as candidates_lib
from jax_dissect.analyses.dnd import config as config_lib
from jax_dissect.analyses.dnd import images as images_lib
from jax_dissect.analyses.dnd import target as target_lib

Generator = Callable[[str, int, int], Any]


@dataclasses.dataclass(frozen=True)
class Selection:
  """A neuron's ranked candidates.

  Attributes:
    labels: candidates, best first (all of them).
    score: the best candidate's score (combined score, or similarity).
    details: per candidate (in candidate order) the numbers behind it.
  """
  labels: tuple[str, ...]
  score: float
  details: tuple[dict[str, Any], ...]

  def to_json(self) -> dict[str, Any]:
    return {"labels": list(self.labels), "score": self.score,
            "details": list(self.details)}

  @classmethod
  def from_json(cls, value: dict[str, Any]) -> "Selection":
    return cls(tuple(value["labels"]), float(value["score"]),
               tuple(value["details"]))


# ---------------------------------------------------------------------------
# Scoring (pure numpy).


def rank_positions(activations: Sequence[np.ndarray]) -> list[list[int]]:
  """Ranks of each candidate's generated images among all of them.

  Args:
    activations: per candidate, the neuron's activations on its images.

  Returns:
    Per candidate, the sorted 0-based positions of its images when all
    images are sorted by activation, highest first (ties: earlier
    candidate, then earlier image first).
  """
  values = np.concatenate([np.asarray(a, np.float64).ravel()
                           for a in activations] or [np.zeros(0)])
  owner = np.concatenate([np.full(np.size(a), c) for c, a in
                          enumerate(activations)] or [np.zeros(0, int)])
  order = np.argsort(-values, kind="stable")
  position = np.empty(len(values), np.int64)
  position[order] = np.arange(len(values))
  return [sorted(int(p) for p in position[owner == c])
          for c in range(len(activations))]


def topk_sq_mean(ranks: Sequence[Sequence[int]], beta: int) -> np.ndarray:
  """Mean of the squares of each candidate's `beta` smallest ranks.

  A candidate with no images gets len(ranks) + 1 (as the original).

  Returns:
    (M,) float64; lower is better.
  """
  out = np.empty(len(ranks), np.float64)
  for c, r in enumerate(ranks):
    best = np.asarray(sorted(r)[:beta], np.float64)
    out[c] = np.mean(best ** 2) if best.size else len(ranks) + 1
  return out


def clip_weights(top_embeddings: np.ndarray,
                 generated_embeddings: Sequence[np.ndarray]) -> np.ndarray:
  """Mean cosine similarity of the neuron's top images to each candidate's
  (most activating) generated images; -1 for a candidate with none.

  Args:
    top_embeddings: (T, D) unit-norm CLIP embeddings of the top images.
    generated_embeddings: per candidate, (n_c, D) unit-norm embeddings.

  Returns:
    (M,) float64.
  """
  top = np.asarray(top_embeddings, np.float64)
  out = np.full(len(generated_embeddings), -1.0)
  for c, emb in enumerate(generated_embeddings):
    emb = np.asarray(emb, np.float64)
    if emb.size:
      out[c] = float(np.mean(top @ emb.T))
  return out


def combine(topk_scores: np.ndarray, weights: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """The original's combination of rank score and CLIP weight.

  Returns:
    (order, combined): combined[c] = (M - position of c when sorted by
    topk_scores ascending) * weights[c]; order = candidates by combined,
    highest first (ties in candidate order).
  """
  topk_scores = np.asarray(topk_scores, np.float64)
  m = len(topk_scores)
  position = np.empty(m, np.int64)
  position[np.argsort(topk_scores, kind="stable")] = np.arange(m)
  combined = (m - position) * np.asarray(weights, np.float64)
  return np.argsort(-combined, kind="stable"), combined


def highest_activating(ranks: Sequence[Sequence[int]],
                       activations: Sequence[np.ndarray], top_k: int
                       ) -> list[list[int]]:
  """Per candidate, indices of its images among the `top_k` best overall."""
  out = []
  for r, a in zip(ranks, activations):
    order = np.argsort(-np.asarray(a, np.float64), kind="stable")
    # The c-th best image of a candidate has the c-th smallest rank.
    out.append([int(order[j]) for j, pos in enumerate(sorted(r))
                if pos < top_k])
  return out


def score_candidates(candidates: Sequence[str],
                     activations: Sequence[np.ndarray],
                     top_embeddings: np.ndarray,
                     generated_embeddings: Sequence[np.ndarray], beta: int,
                     clip_top_k: int) -> Selection:
  """Ranks one neuron's candidates from its generated images.

  Args:
    candidates: M candidate concepts.
    activations: per candidate, (n_c,) activations of the neuron on its
      generated images.
    top_embeddings: (T, D) CLIP embeddings of the neuron's top images.
    generated_embeddings: per candidate, (n_c, D) CLIP embeddings of its
      generated images (same order as `activations`).
    beta: ranks averaged by topk_sq_mean.
    clip_top_k: generated images among the best `clip_top_k` overall count
      for the CLIP weight.

  Returns:
    The Selection (labels by combined score; details per candidate).
  """
  ranks = rank_positions(activations)
  scores = topk_sq_mean(ranks, beta)
  best = highest_activating(ranks, activations, clip_top_k)
  weights = clip_weights(top_embeddings, [
      np.asarray(e)[idx] for e, idx in zip(generated_embeddings, best)])
  order, combined = combine(scores, weights)
  details = tuple({"candidate": c, "ranks": ranks[i],
                   "topk_sq_mean": float(scores[i]),
                   "clip_weight": float(weights[i]),
                   "combined": float(combined[i])}
                  for i, c in enumerate(candidates))
  return Selection(tuple(candidates[i] for i in order),
                   float(combined[order[0]]), details)


# ---------------------------------------------------------------------------
# Cached model calls.


def _clip_identity(clip_embedder: Any) -> str:
  return candidates_lib.model_identity(clip_embedder)


def embed_images(clip_embedder: Any, pixels: Sequence[Any],
                 fingerprints: Any, store) -> np.ndarray:
  """(n, D) CLIP image embeddings, cached under the images' fingerprints.

  `pixels` is a sequence of PIL images (possibly an images.LazyImages).
  """
  key = store.key("clip_images", clip=_clip_identity(clip_embedder),
                  images=fingerprints)
  emb = store.get_array(key)
  if emb is None:
    emb = np.asarray(clip_embedder.embed_images(pixels), np.float32)
    if emb.ndim != 2 or emb.shape[0] != len(pixels):
      raise ValueError(f"clip_embedder.embed_images returned shape "
                       f"{emb.shape} for {len(pixels)} images; expected "
                       "(n, D)")
    store.put_array(key, emb)
  return emb


def generated_images(generator: Generator, candidate: str,
                     config: config_lib.DnDConfig, store
                     ) -> tuple[np.ndarray, str]:
  """(images (n, H, W, 3) uint8, store key) of one candidate's prompt."""
  prompt = config.prompt_template.format(candidate)
  key = store.key("generated", generator=candidates_lib.model_identity(
      generator), prompt=prompt, num=config.num_generated, seed=config.seed)
  images = store.get_array(key)
  if images is None:
    what = f"the generator (prompt {prompt!r})"
    images = images_lib.to_uint8(
        generator(prompt, config.num_generated, config.seed), what)
    if images.shape[0] != config.num_generated:
      raise ValueError(f"{what} returned {images.shape[0]} images; expected "
                       f"num_generated={config.num_generated}")
    store.put_array(key, images)
  size = config.generated_image_size
  if size is not None:
    images = np.stack([np.asarray(images_lib.square(im, size))
                       for im in images_lib.to_pil(images)])
  return images, f"{key}@{size}"


def select_by_generation(target: target_lib.Target, layer: str,
                         candidates: dict[int, list[str]],
                         top: dict[int, tuple[list[Any], list[str]]],
                         generator: Generator, clip_embedder: Any,
                         config: config_lib.DnDConfig, store
                         ) -> dict[int, Selection]:
  """selection="generation" for the neurons in `candidates`.

  Args:
    target, layer: the network and layer.
    candidates: {unit: its candidate concepts}.
    top: {unit: (its top images as PIL images, their fingerprints)}.
    generator: text-to-image callable (see the module docstring).
    clip_embedder: object with embed_images(images) -> (n, D) unit rows.
    config, store: settings and storage.

  Returns:
    {unit: Selection}.
  """
  unique = list(dict.fromkeys(c for cs in candidates.values() for c in cs))
  acts, gen_emb = {}, {}
  for cand in unique:  # Each candidate once, shared by all neurons.
    images, images_id = generated_images(generator, cand, config, store)
    key = store.key("generated_acts", target=target.identity, layer=layer,
                    images=images_id)
    a = store.get_array(key)
    if a is None:
      a = target.pooled(images_lib.to_pil(images), layer)
      store.put_array(key, a)
    acts[cand] = a
    gen_emb[cand] = embed_images(clip_embedder, images_lib.to_pil(images),
                                 images_id, store)
  out = {}
  for unit, cands in candidates.items():
    pixels, prints = top[unit]
    key = store.key("scores", target=target.identity, layer=layer,
                    unit=unit, candidates=cands, top=prints,
                    clip=_clip_identity(clip_embedder),
                    generator=candidates_lib.model_identity(generator),
                    beta=config.beta, clip_top_k=config.clip_top_k,
                    generated=[config.prompt_template, config.num_generated,
                               config.seed, config.generated_image_size])
    value = store.get_json(key)
    if value is None:
      top_emb = embed_images(clip_embedder, pixels, prints, store)
      value = score_candidates(cands, [acts[c][:, unit] for c in cands],
                               top_emb, [gen_emb[c] for c in cands],
                               config.beta, config.clip_top_k).to_json()
      store.put_json(key, value)
    out[unit] = Selection.from_json(value)
  return out


def select_by_clip_dissect(probe_activations: np.ndarray,
                           probe_embeddings: np.ndarray,
                           candidates: dict[int, list[str]],
                           clip_embedder: Any,
                           config: config_lib.DnDConfig, store
                           ) -> dict[int, Selection]:
  """selection="clip_dissect" for the neurons in `candidates`.

  Args:
    probe_activations: (N, K) pooled activations of the whole layer.
    probe_embeddings: (N, D) CLIP image embeddings of the probe images.
    candidates: {unit: its candidate concepts}.
    clip_embedder: object with embed_texts(texts) -> (m, D) unit rows.
    config, store: settings (similarity_fn, similarity_kwargs) and storage.

  Returns:
    {unit: Selection} (score: the similarity of the best candidate).
  """
  unique = list(dict.fromkeys(c for cs in candidates.values() for c in cs))
  key = store.key("clip_texts", clip=_clip_identity(clip_embedder),
                  texts=unique)
  text_emb = store.get_array(key)
  if text_emb is None:
    text_emb = np.asarray(clip_embedder.embed_texts(unique), np.float32)
    store.put_array(key, text_emb)
  p = clip_lib.concept_activations(probe_embeddings, text_emb)
  if p.shape[1] == 1:  # The kernels need 2 concepts; a copy changes nothing.
    p = np.concatenate([p, p], axis=1)
  sims = np.asarray(similarity.compute(
      config.similarity_fn, probe_activations, p, seed=config.seed,
      **dict(config.similarity_kwargs)))
  column = {c: i for i, c in enumerate(unique)}
  out = {}
  for unit, cands in candidates.items():
    values = np.asarray([sims[unit, column[c]] for c in cands])
    order = np.argsort(-values, kind="stable")
    out[unit] = Selection(
        tuple(cands[i] for i in order), float(values[order[0]]),
        tuple({"candidate": c, "similarity": float(v)}
              for c, v in zip(cands, values)))
  return out
