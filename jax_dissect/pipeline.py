"""describe_neurons: probe data -> activations + P -> similarity -> labels.

Every expensive array is taken from the content-addressed cache when an
entry for exactly the same inputs exists, and otherwise computed in shards
of probe images that are saved as they finish, so an interrupted run resumes
where it stopped. The log says, for each array, whether it came from the
cache ("cache hit") or was computed ("computing").
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import importlib
import json
import os
import time
from typing import Any, Callable, Iterator, Sequence

from absl import logging
import jax
import ml_collections
import numpy as np

import jax_dissect
from jax_dissect import cache as cache_lib
from jax_dissect import concepts as concepts_lib
from jax_dissect import data as data_lib
from jax_dissect import progress as progress_lib
from jax_dissect import sharding
from jax_dissect import similarity

TOP_IMAGES = 10
TOP_ALTERNATIVES = 5
SHARDING_METHODS = ("auto", "none") + sharding.METHODS


def default_config() -> ml_collections.ConfigDict:
  """Every option of describe_neurons, with the reference CLI's defaults."""
  c = ml_collections.ConfigDict()
  # The reference CLI's options (same names and defaults).
  c.clip_model = "openai/clip-vit-base-patch16"
  c.target_model = "resnet50"
  c.target_layers = "conv1,layer1,layer2,layer3,layer4"
  c.d_probe = "imagenet_broden"
  c.concept_set = "data/20k.txt"
  c.batch_size = 200
  c.pool_mode = "avg"
  c.token_pool = "cls"  # (B, T, C) token maps (ViTs): "cls" or "mean".
  c.similarity_fn = "soft_wpmi"
  c.result_dir = "results"
  c.activation_dir = "saved_activations"  # The cache directory.
  # jax_dissect's own options.
  c.target_weights = ml_collections.config_dict.placeholder(str)
  c.target_seed = 0  # Seed of target_weights="random".
  c.clip_seed = 0  # Seed of clip_model="random".
  c.clip_tokenizer = ""  # Directory or BPE .txt.gz, for clip_model="random".
  c.clip_config = ml_collections.ConfigDict()  # CLIPConfig overrides (random).
  c.similarity_kwargs = ml_collections.ConfigDict()  # e.g. {"top_k": 50}.
  c.seed = 0  # rank_reorder's permutations.
  c.prompt_template = ml_collections.config_dict.placeholder(str)
  c.p_dtype = "float32"
  c.concept_activations = ""  # A precomputed P (N, M) .npy, instead of CLIP.
  c.sharding = "auto"  # auto | none | shard_map | pmap.
  c.shard_images = 2048  # Probe images per saved cache shard.
  c.strict = False  # Unreadable probe images: error instead of skip.
  c.max_images = 0  # Use only the first max_images probe images (0 = all).
  c.num_threads = 0  # Image decoding threads; 0 = min(4, CPUs).
  c.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  c.tfds_manual_dir = ml_collections.config_dict.placeholder(str)
  c.broden_dir = ml_collections.config_dict.placeholder(str)
  return c


@dataclasses.dataclass
class LayerResult:
  """The descriptions of one layer's neurons.

  Attributes:
    layer: layer path.
    descriptions: one per neuron, in unit order.
    top_images: (K, TOP_IMAGES) probe indices, most activating first.
  """
  layer: str
  descriptions: list[similarity.NeuronDescription]
  top_images: np.ndarray


@dataclasses.dataclass
class Results:
  """What describe_neurons returns; also written to `result_dir`.

  Attributes:
    result_dir: the directory the results were written to.
    layers: per layer, in the order requested.
    concepts: the M concepts (columns of P).
    image_ids: the N probe image ids (rows of A and P).
    skipped_images: ids of probe images that could not be read.
    timings: seconds per stage.
  """
  result_dir: str
  layers: dict[str, LayerResult]
  concepts: list[str]
  image_ids: list[str]
  skipped_images: list[str]
  timings: dict[str, float]


class _Stages:
  """Stage timing with log lines."""

  def __init__(self):
    self.timings: dict[str, float] = {}

  def run(self, name: str, fn: Callable[[], Any]) -> Any:
    logging.info("stage %s: start", name)
    t0 = time.perf_counter()
    out = fn()
    self.timings[name] = self.timings.get(name, 0.0) + (
        time.perf_counter() - t0)
    logging.info("stage %s: done in %.1f s", name, self.timings[name])
    return out


# ----------------------------------------------------------------------------
# Inputs.
# ----------------------------------------------------------------------------


def _split_layers(spec: str | Sequence[str]) -> list[str]:
  layers = ([s.strip() for s in spec.split(",")] if isinstance(spec, str)
            else [str(s).strip() for s in spec])
  layers = [l for l in layers if l]
  if not layers:
    raise ValueError("target_layers is empty; name at least one layer, e.g. "
                     "'layer4'")
  dupes = sorted({l for l in layers if layers.count(l) > 1})
  if dupes:
    raise ValueError(f"target_layers names {dupes} more than once")
  return layers


def _check_choice(name: str, value: str, allowed: Sequence[str]) -> None:
  if value not in allowed:
    raise ValueError(f"{name}={value!r} is not valid; allowed: "
                     f"{', '.join(allowed)}")


def load_target(name: str, weights: str | None, seed: int):
  """Returns (ModelSpec, module, variables) for a registry name or import path.

  `name` is a registry name (jax_dissect.models.list_models()) or
  `package.module:factory`, where factory() returns a ModelSpec.
  """
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  if ":" in name:
    mod_name, _, attr = name.partition(":")
    try:
      factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
      raise ValueError(f"target_model {name!r}: cannot import {attr!r} from "
                       f"module {mod_name!r} ({e})") from e
    spec = factory()
  else:
    spec = models.get_model(name)
  module, variables = spec.load(weights, seed=seed)
  return spec, module, variables


def _scan_probe(probe: data_lib.ProbeSet, cache: cache_lib.ArrayCache,
                strict: bool) -> tuple[data_lib.ProbeSet, list[str]]:
  """Drops unreadable images (cached per probe fingerprint)."""
  key = cache.key("scan", probe=probe.fingerprint())
  path = os.path.join(cache.root, key + ".json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      scan = json.load(f)
    logging.info("cache hit: probe scan of %s", probe.describe())
  else:
    logging.info("computing: probe scan of %s", probe.describe())
    result = data_lib.scan(probe)
    scan = {"readable": list(result.readable),
            "skipped": [list(s) for s in result.skipped]}
    cache_lib.write_text_atomic(path, json.dumps(scan))
  skipped = scan["skipped"]
  for image_id, err in skipped:
    logging.warning("skipping unreadable probe image %s: %s", image_id, err)
  if skipped:
    if strict:
      raise ValueError(f"{len(skipped)} probe image(s) cannot be read (first:"
                       f" {skipped[0][0]}: {skipped[0][1]}); remove them or "
                       "run without --strict to skip them")
    logging.warning("skipped %d unreadable probe image(s) of %d",
                    len(skipped), len(probe))
    probe = data_lib.Subset(probe, scan["readable"])
  return probe, [s[0] for s in skipped]


def _prefetched(probe: data_lib.ProbeSet, start: int, stop: int,
                batch_size: int, transform: Callable, num_threads: int
                ) -> Iterator[np.ndarray]:
  """(B, H, W, 3) batches of images [start, stop), decoded in threads."""
  def one(i):
    return transform(probe.load(i))
  with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
    futures = []
    for b in range(start, stop, batch_size):
      futures.append([pool.submit(one, i)
                      for i in range(b, min(b + batch_size, stop))])
      if len(futures) > 2:  # Keep two batches in flight.
        yield np.stack([f.result() for f in futures.pop(0)])
    for batch in futures:
      yield np.stack([f.result() for f in batch])


# ----------------------------------------------------------------------------
# Cached arrays.
# ----------------------------------------------------------------------------


def _sharded_rows(cache: cache_lib.ArrayCache, keys: dict[str, str],
                  what: str, num_rows: int, shard_rows: int,
                  compute: Callable[[int, int, list[str]],
                                    dict[str, np.ndarray]],
                  describe: dict[str, dict]) -> dict[str, np.ndarray]:
  """Gets arrays {name: (num_rows, ...)} from the cache or computes them.

  Args:
    cache: the cache.
    keys: {name: cache key} of the arrays.
    what: human name for log lines.
    num_rows: rows (probe images) of every array.
    shard_rows: rows per saved shard.
    compute: (start, stop, names) -> {name: rows [start, stop)} for the
      names whose shard is missing.
    describe: {name: metadata saved beside the entry}.

  Returns:
    {name: array (memory-mapped from the cache)}.
  """
  out = {}
  for name, key in keys.items():
    if cache.has(key):
      logging.info("cache hit: %s [%s]", what, name)
      out[name] = cache.load(key)
  todo = [n for n in keys if n not in out]
  if not todo:
    return out
  writers = {n: cache.sharded_writer(keys[n], num_rows, shard_rows)
             for n in todo}
  first = writers[todo[0]]
  saved = sum(w.has(s) for w in writers.values()
              for s in range(w.num_shards))
  logging.info("computing: %s [%s] (%d images in %d shard(s)%s)", what,
               ", ".join(todo), num_rows, first.num_shards,
               f"; resuming: {saved} of {first.num_shards * len(todo)} "
               "shard files already saved" if saved else "")
  progress = progress_lib.Progress(what, num_rows)
  for s in range(first.num_shards):
    start, stop = first.shard_range(s)
    names = [n for n in todo if not writers[n].has(s)]
    if names:
      rows = compute(start, stop, names)
      for n in names:
        writers[n].save(s, rows[n])
    progress.update(stop - start, final=s == first.num_shards - 1)
  for n in todo:
    out[n] = writers[n].finish(describe.get(n))
  return out


def _clip_embedder(config: ml_collections.ConfigDict, cache_root: str):
  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  if config.clip_model != "random":
    return clip.ClipEmbedder.from_pretrained(config.clip_model)
  tok = config.clip_tokenizer
  if not tok:
    raise ValueError("clip_model='random' needs clip_tokenizer: a saved CLIP "
                     "tokenizer directory or OpenAI's bpe_simple_vocab_16e6."
                     "txt.gz")
  if os.path.isfile(tok):
    tok_dir = os.path.join(cache_root, "tokenizer",
                           cache_lib.fingerprint(os.path.abspath(tok))[:16])
    if not os.path.exists(os.path.join(tok_dir, "tokenizer.json")):
      clip.build_clip_tokenizer(tok, tok_dir)
    tok = tok_dir
  return clip.ClipEmbedder.random(config.clip_config.to_dict(),
                                  seed=config.clip_seed, tokenizer_dir=tok)


def _concept_activations(config, cache, probe, concept_set, stages,
                         num_threads
                         ) -> tuple[np.ndarray, dict[str, str], str]:
  """P (N, M) from a given file or from CLIP (cached).

  Returns:
    (P, {name: path} of P and the embeddings, a digest of P's content).
  """
  n, m = len(probe), len(concept_set)
  if config.concept_activations:
    path = config.concept_activations
    if not os.path.isfile(path):
      raise ValueError(f"concept_activations file {path!r} does not exist")
    p = np.load(path, mmap_mode="r", allow_pickle=False)
    if p.ndim != 2 or p.shape != (n, m):
      raise ValueError(
          f"concept_activations {path!r} has shape {p.shape}; expected "
          f"(N, M) = ({n}, {m}): one row per readable probe image, one "
          "column per concept")
    logging.info("using precomputed concept activations %s", path)
    return p, {"concept_activations": os.path.abspath(path)}, (
        cache_lib.array_fingerprint(np.asarray(p)))

  embedder = stages.run("clip_load",
                        lambda: _clip_embedder(config, cache.root))
  clip_id = embedder.identity()
  texts = concept_set.texts()
  text_key = cache.key("text_embeddings", clip=clip_id, texts=texts)
  if cache.has(text_key):
    logging.info("cache hit: CLIP text embeddings (%d concepts)", m)
    text_emb = cache.load(text_key)
  else:
    logging.info("computing: CLIP text embeddings (%d concepts)", m)
    text_emb = stages.run("clip_text", lambda: embedder.embed_texts(
        texts, batch_size=max(1, config.batch_size)))
    cache.save(text_key, text_emb, {"clip": clip_id, "num_texts": m})

  probe_fp = probe.fingerprint()
  image_key = cache.key("image_embeddings", clip=clip_id, probe=probe_fp)

  def embed(start, stop, names):
    del names
    batches = _prefetched(probe, start, stop, config.batch_size,
                          embedder.transform, num_threads)
    return {"image": np.concatenate([embedder.embed_pixels(
        b, batch_size=config.batch_size) for b in batches])}

  image_emb = stages.run("clip_images", lambda: _sharded_rows(
      cache, {"image": image_key}, "CLIP image embeddings", n,
      config.shard_images, embed, {"image": {"clip": clip_id,
                                             "probe": probe.describe()}}))[
                                                 "image"]

  p_key = cache.key("concept_activations", image=image_key, text=text_key,
                    dtype=config.p_dtype)
  if cache.has(p_key):
    logging.info("cache hit: concept activations P (%d x %d)", n, m)
  else:
    logging.info("computing: concept activations P (%d x %d)", n, m)
    stages.run("concept_activations", lambda: _write_p(
        cache, p_key, image_emb, text_emb, config.p_dtype))
  return cache.load(p_key), {
      "concept_activations": cache.path(p_key),
      "image_embeddings": cache.path(image_key),
      "text_embeddings": cache.path(text_key)}, p_key


def _write_p(cache, key, image_emb, text_emb, dtype, rows=4096) -> None:
  """Writes P block by block into the cache file: one copy, on disk."""
  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  path = cache.path(key)
  n, m = image_emb.shape[0], text_emb.shape[0]
  with cache_lib.atomic_path(path) as tmp:
    first = clip.concept_activations(image_emb[:1], text_emb, dtype=dtype)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype,
                                    shape=(n, m))
    for start in range(0, n, rows):
      out[start:start + rows] = clip.concept_activations(
          image_emb[start:start + rows], text_emb, dtype=dtype)
    out.flush()
    del out


@dataclasses.dataclass
class _Target:
  """A loaded target model and the cache keys of its layers' activations."""
  spec: Any
  module: Any
  variables: Any
  pool: str
  keys: dict[str, str]
  token_pool: str = "cls"


def _load_target_layers(config, cache, probe, layers, stages) -> _Target:
  """Loads the target, checks the layer names, makes the cache keys."""
  from jax_dissect import activations as act_lib  # pylint: disable=g-import-not-at-top
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  pool = act_lib.canonical_pool(config.pool_mode)
  token_pool = act_lib.canonical_token_pool(config.token_pool)
  spec, module, variables = stages.run("target_load", lambda: load_target(
      config.target_model, config.target_weights, config.target_seed))
  valid = act_lib.list_layers(
      module, variables, (1, spec.input_size, spec.input_size, 3))
  unknown = [l for l in layers if l not in valid]
  if unknown:
    raise act_lib.unknown_layer_error(unknown, list(valid))
  # Keys of token_pool="cls" runs are those of runs before the option.
  pool_id = pool if token_pool == "cls" else f"{pool},tokens_{token_pool}"
  model_fp = models.weights_fingerprint(variables)
  probe_fp = probe.fingerprint()
  keys = {l: cache.key("activations", model=config.target_model,
                       weights=model_fp, layer=l, pool=pool_id,
                       transform=spec.transform.identity(), probe=probe_fp)
          for l in layers}
  return _Target(spec, module, variables, pool, keys, token_pool)


def _activations(config, cache, probe, target: _Target, stages, num_threads
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Pooled activations (N, K) per layer, from the cache or computed."""
  from jax_dissect import activations as act_lib  # pylint: disable=g-import-not-at-top

  def compute(start, stop, names):
    batches = _prefetched(probe, start, stop, config.batch_size,
                          target.spec.transform, num_threads)
    return act_lib.collect_activations(
        target.module, target.variables, batches, names, pool=target.pool,
        batch_size=config.batch_size, num_images=stop - start,
        token_pool=target.token_pool)

  describe = {l: {"model": config.target_model, "layer": l,
                  "pool": target.pool, "token_pool": target.token_pool,
                  "probe": probe.describe()}
              for l in target.keys}
  arrays = stages.run("activations", lambda: _sharded_rows(
      cache, target.keys, "activations", len(probe), config.shard_images,
      compute, describe))
  return arrays, {l: cache.path(k) for l, k in target.keys.items()}


# ----------------------------------------------------------------------------
# Similarity and labels.
# ----------------------------------------------------------------------------


def _run_kernel(config, a, p, kwargs) -> jax.Array:
  method = config.sharding
  if method == "auto":
    method = "shard_map" if jax.device_count() > 1 else "none"
  if method == "none":
    return similarity.run_similarity(config.similarity_fn, a, p, **kwargs)
  return sharding.sharded_similarity(config.similarity_fn, a, p,
                                     method=method, **kwargs)


def _layer_result(config, cache, layer, a, a_key, p, p_key, concepts,
                  kwargs) -> LayerResult:
  hyper = {k: v for k, v in kwargs.items() if k != "key"}
  key = cache.key("labels", activations=a_key, concept_activations=p_key,
                  fn=config.similarity_fn, hyper=hyper, seed=config.seed,
                  concepts=concepts)
  path = os.path.join(cache.root, key + ".json")
  if os.path.exists(path):
    logging.info("cache hit: labels of %s", layer)
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    return LayerResult(
        layer, [similarity.NeuronDescription(
            d["unit"], d["label"], d["score"],
            tuple((c, s) for c, s in d["alternatives"]))
                for d in saved["descriptions"]],
        np.asarray(saved["top_images"], np.int64).reshape(
            len(saved["descriptions"]), -1))
  logging.info("computing: labels of %s (%d neurons x %d concepts, %s)",
               layer, a.shape[1], len(concepts), config.similarity_fn)
  a = np.asarray(a, np.float32)
  sim = _run_kernel(config, a, p, kwargs)
  descriptions = similarity.describe(sim, concepts, top_n=TOP_ALTERNATIVES)
  del sim
  n_top = min(TOP_IMAGES, a.shape[0])
  top_images = np.argsort(-a, axis=0, kind="stable")[:n_top].T
  cache_lib.write_text_atomic(path, json.dumps({
      "descriptions": [dataclasses.asdict(d) for d in descriptions],
      "top_images": top_images.tolist()}))
  return LayerResult(layer, descriptions, top_images)


# ----------------------------------------------------------------------------
# Results directory.
# ----------------------------------------------------------------------------


def _write_results(result_dir: str, results: Results, config_dict: dict,
                   arrays: dict) -> None:
  os.makedirs(result_dir, exist_ok=True)
  rows = [["layer", "unit", "description", "similarity"]]
  lines = []
  for layer, res in results.layers.items():
    for d, top in zip(res.descriptions, res.top_images):
      rows.append([layer, d.unit, d.label, f"{d.score:.6g}"])
      lines.append(json.dumps({
          "layer": layer, "unit": d.unit, "description": d.label,
          "similarity": d.score,
          "alternatives": [{"concept": c, "similarity": s}
                           for c, s in d.alternatives],
          "top_images": [results.image_ids[i] for i in top]}))
  with cache_lib.atomic_path(os.path.join(result_dir,
                                          "descriptions.csv")) as tmp:
    with open(tmp, "w", encoding="utf-8", newline="") as f:
      csv.writer(f).writerows(rows)
  files = {
      "neurons.jsonl": "\n".join(lines) + "\n",
      "concepts.txt": "\n".join(results.concepts) + "\n",
      "image_ids.txt": "\n".join(results.image_ids) + "\n",
      "arrays.json": json.dumps(arrays, indent=1),
      "config.json": json.dumps(config_dict, indent=1, default=str),
  }
  if results.skipped_images:
    files["skipped_images.txt"] = "\n".join(results.skipped_images) + "\n"
  for name, text in files.items():
    cache_lib.write_text_atomic(os.path.join(result_dir, name), text)


def describe_neurons(config: ml_collections.ConfigDict) -> Results:
  """Labels every neuron of the chosen layers; writes `config.result_dir`.

  Args:
    config: options, see `default_config()` (missing keys take defaults).

  Returns:
    Results (also written as descriptions.csv, neurons.jsonl, config.json,
    concepts.txt, image_ids.txt, arrays.json in result_dir; see
    docs/results_format.md).

  Raises:
    ValueError: for bad options (unknown model, layer, data set, similarity
      function, concept file...) with a message naming the value and the
      valid ones.
  """
  full = default_config()
  full.update(config.to_dict() if hasattr(config, "to_dict") else config)
  config = full
  _check_choice("similarity_fn", config.similarity_fn,
                list(similarity.SIMILARITY_FNS))
  _check_choice("sharding", config.sharding, SHARDING_METHODS)
  if config.batch_size < 1:
    raise ValueError(f"batch_size={config.batch_size}; must be >= 1")
  layers = _split_layers(config.target_layers)
  num_threads = config.num_threads or min(4, os.cpu_count() or 1)
  stages = _Stages()
  cache = cache_lib.ArrayCache(config.activation_dir)

  concept_set = concepts_lib.read_concepts(config.concept_set,
                                           config.prompt_template)
  if len(concept_set) < 2:
    raise ValueError(f"concept set {config.concept_set!r} has "
                     f"{len(concept_set)} concept; at least 2 are needed")
  concepts = list(concept_set.concepts)
  probe = data_lib.make_probe_set(
      config.d_probe, tfds_data_dir=config.tfds_data_dir,
      tfds_manual_dir=config.tfds_manual_dir, broden_dir=config.broden_dir)
  if config.max_images < 0:
    raise ValueError(f"max_images={config.max_images}; must be >= 0 (0 = all)")
  if config.max_images and config.max_images < len(probe):
    probe = data_lib.Subset(probe, range(config.max_images))
  probe, skipped = stages.run("probe_scan", lambda: _scan_probe(
      probe, cache, config.strict))
  if not len(probe):
    raise ValueError(f"no readable image in probe set {config.d_probe!r}")
  logging.info("probe set: %s; %d concepts from %s", probe.describe(),
               len(concepts), config.concept_set)
  kwargs = similarity.fit_kwargs(config.similarity_fn, len(probe),
                                 config.similarity_kwargs.to_dict(),
                                 config.seed)
  # Plan (and so validate) the kernel before any expensive stage.
  similarity.plan_kernel(config.similarity_fn, len(probe), 1, len(concepts),
                         **kwargs)

  # The target and its layer names are checked before any long stage.
  target = _load_target_layers(config, cache, probe, layers, stages)
  p, p_paths, p_key = _concept_activations(config, cache, probe, concept_set,
                                           stages, num_threads)
  acts, act_paths = _activations(config, cache, probe, target, stages,
                                 num_threads)
  p_device = jax.numpy.asarray(np.asarray(p, np.float32))
  layer_results = {}
  for layer in layers:
    layer_results[layer] = stages.run(f"similarity_{layer}", lambda: (
        _layer_result(config, cache, layer, acts[layer], act_paths[layer],
                      p_device, p_key, concepts, kwargs)))
  results = Results(os.path.abspath(config.result_dir), layer_results,
                    concepts, list(probe.ids), skipped, stages.timings)
  config_dict = {**config.to_dict(), "similarity_kwargs": {
      k: v for k, v in kwargs.items() if k != "key"},
                 "jax_dissect_version": jax_dissect.__version__,
                 "devices": [str(d) for d in jax.devices()],
                 "num_images": len(probe), "num_concepts": len(concepts),
                 "num_skipped_images": len(skipped),
                 "timings_s": stages.timings}
  arrays = {**p_paths, "activations": act_paths}
  _write_results(config.result_dir, results, config_dict, arrays)
  logging.info("wrote %s (%d layers, %d neurons)", config.result_dir,
               len(layers), sum(len(r.descriptions)
                                for r in layer_results.values()))
  return results
