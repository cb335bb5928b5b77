"""P of a backbone through the content-addressed cache, with the keys
describe_neurons uses.

The keys of the embeddings and of P are made here, once, for
describe_neurons (jax_dissect.pipeline.describe, which shares the work out
over processes) and for the analyses that compute P with another backbone
(jax_dissect.analyses.backbones, one process): so P made by either is found
by the other.

  text_emb:  ("text_embeddings", backbone identity, the texts)
  image_emb: ("image_embeddings", backbone identity, probe fingerprint)
  P:         ("concept_activations", image key, text key, storage dtype)

The backbone identity (Embedder.identity()) is its name and a digest of
its weights, settings, tokenizer, preprocessing and compute dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from absl import logging
import numpy as np

from jax_dissect.clip import concept_matrix
from jax_dissect.clip import embedder_base
from jax_dissect.data import loader
from jax_dissect.data import probes
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import shard_grid


def text_key(cache: cache_lib.ArrayCache, embedder: embedder_base.Embedder,
             texts: Sequence[str]) -> str:
  """Key of the (M, D) text embeddings of `texts` (as embedded)."""
  return cache.key("text_embeddings", clip=embedder.identity(),
                   texts=list(texts))


def image_key(cache: cache_lib.ArrayCache, embedder: embedder_base.Embedder,
              probe_fingerprint: str) -> str:
  """Key of the (N, D) image embeddings of a probe set."""
  return cache.key("image_embeddings", clip=embedder.identity(),
                   probe=probe_fingerprint)


def p_key(cache: cache_lib.ArrayCache, image: str, text: str,
          dtype: str) -> str:
  """Key of P (N, M) from the embeddings' keys, stored as `dtype`."""
  return cache.key("concept_activations", image=image, text=text, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class CachedP:
  """P of one backbone and where its arrays are.

  Attributes:
    p: (N, M) P, memory-mapped from the cache.
    key: P's cache key (its content digest for later keys).
    paths: {"concept_activations", "image_embeddings", "text_embeddings"}
      -> file path in the cache.
  """
  p: np.ndarray
  key: str
  paths: dict[str, str]


def concept_activations(cache: cache_lib.ArrayCache,
                        embedder: embedder_base.Embedder,
                        probe: probes.ProbeSet, texts: Sequence[str], *,
                        batch_size: int, shard_images: int = 2048,
                        p_dtype: str = "float32", num_threads: int = 0,
                        prefetch: int = loader.DEFAULT_PREFETCH) -> CachedP:
  """P = cos(image, text embeddings) of a backbone, from the cache or
  computed in this process (image embeddings in resumable shards).

  Args:
    cache: the cache (e.g. a run's activation_dir).
    embedder: the backbone.
    probe: the probe images (rows of P, in order).
    texts: the M texts (concepts with the run's template applied).
    batch_size: images and texts per device per call.
    shard_images: images per saved shard of the image embeddings.
    p_dtype: storage dtype of P.
    num_threads: image decoding threads (0: every CPU).
    prefetch: batches per device decoded ahead.

  Returns:
    CachedP.
  """
  what = embedder.kind
  t_key = text_key(cache, embedder, texts)
  with cache.locked(t_key):
    if cache.has(t_key):
      logging.info("cache hit: %s text embeddings (%d concepts)", what,
                   len(texts))
    else:
      logging.info("computing: %s text embeddings (%d concepts)", what,
                   len(texts))
      cache.save(t_key, embedder.embed_texts(list(texts),
                                             batch_size=batch_size),
                 {"clip": embedder.identity(), "num_texts": len(texts)})
  text_emb = cache.load(t_key)

  i_key = image_key(cache, embedder, probe.fingerprint())
  devices = embedder.data_parallel.num_devices

  def embed(ranges, names):
    del names
    batches = loader.range_batches(probe, ranges, batch_size,
                                   embedder.transform,
                                   num_threads=num_threads,
                                   prefetch=prefetch * devices)
    return shard_grid.rows_by_range(
        ({"image": e} for e in embedder.iter_embed_batches(
            batches, batch_size=batch_size,
            num_images=shard_grid.total_rows(ranges))), ranges)

  image_emb = cache.rows(
      {"image": i_key}, f"{what} image embeddings", len(probe), shard_images,
      embed, {"image": {"clip": embedder.identity(),
                        "probe": probe.describe()}})["image"]
  key = p_key(cache, i_key, t_key, p_dtype)
  with cache.locked(key):
    if cache.has(key):
      logging.info("cache hit: concept activations P (%s)", what)
    else:
      logging.info("computing: concept activations P (%d x %d, %s)",
                   len(probe), len(texts), what)
      cache.save_with(key, lambda path: concept_matrix.write_concept_activations(
          path, image_emb, text_emb, p_dtype))
  return CachedP(p=cache.load(key), key=key, paths={
      "concept_activations": cache.path(key),
      "image_embeddings": cache.path(i_key),
      "text_embeddings": cache.path(t_key)})


def describe(embedder: embedder_base.Embedder) -> dict[str, Any]:
  """What a backbone is, for records: name, architecture, identity."""
  return {"name": embedder.name, "model_type": embedder.model_type,
          "identity": embedder.identity(), "embed_dim": embedder.embed_dim,
          "image_size": embedder.image_size,
          "compute_dtype": embedder.compute_dtype}
