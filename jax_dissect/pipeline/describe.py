"""describe_neurons: probe data -> activations + P -> similarity -> labels.

`describe_neurons(config)` follows the method's steps (docs/design.md):

  1. read the concept set and the probe set (unreadable images dropped);
  2. load the target model and check the layer names;
  3. P (N images x M concepts) from CLIP's image and text towers, or a file;
  4. A (N x K) per layer: the target's pooled activations;
  5. S = similarity(A, P) per layer and each neuron's best concepts;
  6. write the results directory (jax_dissect.store.results).

Every expensive array comes from the content-addressed cache
(jax_dissect.store.cache) when an entry for exactly the same inputs exists, and
is otherwise computed in shards of probe images saved as they finish, so an
interrupted run resumes where it stopped. The log says, for each array, whether
it came from the cache ("cache hit") or was computed ("computing").

Scale: the forward passes (CLIP's towers, the target) run one batch per
local device per call (option `devices`; a batch's outputs do not depend on
the device count), in float32 or in half precision
(`compute_dtype`), fed by a thread pool that decodes images ahead
(jax_dissect.data.loader). Under jax.distributed (several processes, started by
the entry point) every process scans, embeds and captures its own block
of the probe set and writes its own cache shards; the kernels run on the
mesh of every process's devices; process 0 alone writes the results.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np

import jax_dissect
from jax_dissect import analyses
from jax_dissect import clip
from jax_dissect import models
from jax_dissect import similarity
from jax_dissect.analyses.scoring import simulation as scoring
from jax_dissect.clip import cached as clip_cached
from jax_dissect.data import concepts as concepts_lib
from jax_dissect.data import loader
from jax_dissect.data import probes as data_lib
from jax_dissect.models import capture as act_lib
from jax_dissect.pipeline import checks as preflight
from jax_dissect.pipeline import config as config_lib
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import distributed
from jax_dissect.runtime import precision
from jax_dissect.runtime import progress
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import integrity
from jax_dissect.store import results as results_lib
from jax_dissect.store import shard_grid

# Bumped when the cached labels' JSON layout changes (old entries are then
# recomputed rather than misread).
_LABELS_FORMAT = 2
# The activations' program (part of their keys): "whole_model", the
# compiled capture does not depend on the layers asked for.
_CAPTURE = "whole_model"


class _Stages:
  """Stage timing with log lines, and what each stage ran on.

  Attributes:
    timings: {stage: seconds}.
    records: {stage: {"seconds", "images_per_s", "devices", "processes",
      ...}}, config.json's "stages".
  """

  def __init__(self, processes: distributed.Processes):
    self.processes = processes
    self.timings: dict[str, float] = {}
    self.records: dict[str, dict[str, Any]] = {}

  def run(self, name: str, fn: Callable[[], Any], *, devices: int = 0,
          images: Callable[[], int] | None = None,
          inputs: loader.InputStats | None = None,
          processes: int | None = None) -> Any:
    """Runs stage `name`, timed.

    Args:
      name: the stage.
      fn: its work.
      devices: devices it runs on, over all processes (0: host only).
      images: returns the probe images it read (after `fn`), when `inputs`
        does not count them.
      inputs: the input pipeline's counts, filled while `fn` runs.
      processes: processes taking part (default: all of the run's).
    """
    logging.info("stage %s: start", name)
    t0 = time.perf_counter()
    with progress.stage(name):  # An entry point's display shows it.
      out = fn()
    seconds = time.perf_counter() - t0
    self.timings[name] = self.timings.get(name, 0.0) + seconds
    logging.info("stage %s: done in %.1f s", name, self.timings[name])
    record = {"seconds": self.timings[name], "images_per_s": None,
              "devices": devices,
              "processes": processes or self.processes.count}
    images = inputs.images if inputs is not None else (
        images() if images else 0)
    if images:
      # Rates of this process's share of the images.
      from_files, decoded = (inputs or loader.InputStats(images)).rates(
          seconds)
      record.update(images=images, images_per_s=from_files)
      if inputs is not None:
        record.update(input_wait_s=inputs.wait_s,
                      images_per_s_without_input_wait=decoded)
        logging.info(
            "stage %s: %d images at %.1f images/s from files; %s images/s "
            "without the %.1f s waited for decoding (%.0f%% of the stage)",
            name, images, from_files,
            f"{decoded:.1f}" if decoded else "n/a", inputs.wait_s,
            100 * inputs.wait_s / max(seconds, 1e-9))
    self.records[name] = record
    return out


# ----------------------------------------------------------------------------


def _main_locked(cache: cache_lib.ArrayCache, key: str,
                 processes: distributed.Processes
                 ) -> contextlib.AbstractContextManager[None]:
  """Entry `key`'s lock, held by process 0 only.

  Another run building the same entry waits for it and then reads it. The
  other processes of this run work under process 0's lock: were they to
  take it too, they would wait for process 0 while it waits for them in
  the collectives of the stage.
  """
  return (cache.locked(key) if processes.is_main
          else contextlib.nullcontext())


def _in_cache(processes: distributed.Processes,
              check: Callable[[], bool]) -> bool:
  """Process 0's `check()` (is an entry in the cache and sound?) on every
  process; only process 0 checks (and removes a damaged entry)."""
  return processes.agree([processes.is_main and check()])[0]


# ----------------------------------------------------------------------------
# 1. Probe images.
# ----------------------------------------------------------------------------


def _scan_block(probe: data_lib.ProbeSet, processes: distributed.Processes
                ) -> dict[str, list]:
  """Scans this process's block of the probe set; the whole set's result.

  Returns:
    {"readable": [index, ...], "skipped": [[id, message], ...]} of the
    whole probe set (messages of other processes' images are read again
    on process 0, the one that saves them).
  """
  start, stop = processes.block(len(probe))
  part = data_lib.scan(data_lib.Subset(probe, range(start, stop)))
  mask = np.zeros(len(probe), np.int32)
  mask[[start + i for i in part.readable]] = 1
  readable = np.flatnonzero(processes.sum(mask))
  if processes.count == 1:
    return {"readable": readable.tolist(),
            "skipped": [list(s) for s in part.skipped]}
  mine = dict(part.skipped)
  skipped = []
  for i in sorted(set(range(len(probe))) - set(readable.tolist())):
    image_id = probe.ids[i]
    if image_id not in mine and processes.is_main:
      try:
        probe.load(i)
        mine[image_id] = "unreadable on another process"
      except Exception as e:  # pylint: disable=broad-except
        mine[image_id] = str(e)
    skipped.append([image_id, mine.get(image_id, "unreadable")])
  return {"readable": readable.tolist(), "skipped": skipped}


def _scan_probe(probe: data_lib.ProbeSet, cache: cache_lib.ArrayCache,
                strict: bool, processes: distributed.Processes,
                scanned: list[int]) -> tuple[data_lib.ProbeSet, list[str]]:
  """Drops unreadable images (the scan is cached per probe fingerprint).

  Appends the number of images this process decoded to `scanned`.
  """
  key = cache.key("scan", probe=probe.fingerprint())
  with _main_locked(cache, key, processes):
    scan = cache.load_json(key) if processes.is_main else None
    if processes.agree([scan is not None])[0]:
      logging.info("cache hit: probe scan of %s", probe.describe())
    else:
      logging.info("computing: probe scan of %s", probe.describe())
      scan = _scan_block(probe, processes)
      start, stop = processes.block(len(probe))
      scanned.append(stop - start)
      if processes.is_main:
        cache.save_json(key, scan)
  if scan is None:  # A hit, read here once process 0 let the lock go.
    scan = cache.load_json(key)
    if scan is None:
      raise ValueError(f"the probe scan {cache.json_path(key)} that process "
                       "0 found is missing or damaged on this process; is "
                       "activation_dir on a file system every process sees?")
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


def _probe_set(config, cache, stages) -> tuple[data_lib.ProbeSet, list[str]]:
  probe = data_lib.probe_set_from_options(
      config, digests=data_lib.FileDigests(cache, config.num_threads or None))
  processes = stages.processes
  processes.check_same("probe set", probe.fingerprint())
  scanned = []
  probe, skipped = stages.run("probe_scan", lambda: _scan_probe(
      probe, cache, config.strict, processes, scanned),
      images=lambda: sum(scanned))
  if not len(probe):
    raise ValueError(f"no readable image in probe set {config.d_probe!r}")
  return probe, skipped


# ----------------------------------------------------------------------------
# 2. The target model.
# ----------------------------------------------------------------------------


class _Target:
  """A loaded target model, its layers and their activations' cache keys."""

  def __init__(self, config, cache, probe, layers, stages):
    self.pool = act_lib.canonical_pool(config.pool_mode)
    # A prefix token's name (e.g. "reg0") is the model's: checked against
    # its spec before the weights load.
    self.token_pool = act_lib.canonical_token_pool(
        config.token_pool, models.resolve_model(
            config.target_model).prefix_tokens)
    self.spec, self.module, self.variables = stages.run(
        "target_load", lambda: models.load_target(
            config.target_model, config.target_weights, config.target_seed))
    size = self.spec.input_size
    valid = act_lib.list_layers(self.module, self.variables,
                                (1, size, size, 3))
    unknown = [l for l in layers if l not in valid]
    if unknown:
      raise act_lib.unknown_layer_error(unknown, list(valid))
    # Keys of token_pool="cls" runs are those of runs before the option.
    pool_id = (self.pool if self.token_pool == "cls"
               else f"{self.pool},tokens_{self.token_pool}")
    model_fp = models.weights_fingerprint(self.variables)
    probe_fp = probe.fingerprint()
    # float32 keys are those of runs before the compute_dtype option.
    dtype = ({} if config.compute_dtype == precision.DEFAULT
             else {"compute_dtype": config.compute_dtype})
    # capture: the program runs the whole model whatever the layer set
    # (models.capture), so entries of earlier versions, whose bits
    # depended on the layers captured with them, are not reused.
    self.keys = {l: cache.key("activations", model=config.target_model,
                              weights=model_fp, layer=l, pool=pool_id,
                              transform=self.spec.transform.identity(),
                              probe=probe_fp, capture=_CAPTURE, **dtype)
                 for l in layers}


# ----------------------------------------------------------------------------
# 3. P, the concept activations.
# ----------------------------------------------------------------------------


def _given_p(path: str, p: np.ndarray, cache: cache_lib.ArrayCache,
             processes: distributed.Processes
             ) -> tuple[np.ndarray, dict, str]:
  """A given P (checked before the work by preflight.read_p_file), copied
  into the cache so that the run's arrays are all in its cache directory
  (readers trust arrays.json's paths only there)."""
  logging.info("using precomputed concept activations %s", path)
  digest = integrity.array_fingerprint(np.asarray(p))
  key = cache.key("concept_activations", given=digest)
  with _main_locked(cache, key, processes):
    if not _in_cache(processes, lambda: cache.has(key)):
      if processes.is_main:
        cache.save(key, np.asarray(p), {"given": os.path.abspath(path)})
      processes.barrier("given concept activations copied")
  return cache.load(key), {"concept_activations": cache.path(key)}, digest


def _probe_batches(config, probe, transform, inputs: loader.InputStats
                   ) -> Callable[[list[tuple[int, int]]], Any]:
  """ranges -> the decoded batches of those probe images (one call of the
  forward pass takes one batch per device, so `prefetch_batches` calls'
  worth are decoded ahead)."""
  devices = len(data_parallel.local_devices(config.devices))
  return lambda ranges: loader.range_batches(
      probe, ranges, config.batch_size, transform,
      num_threads=config.num_threads,
      prefetch=config.prefetch_batches * devices, stats=inputs)


def _text_embeddings(config, cache, embedder, texts, stages
                     ) -> tuple[np.ndarray, str]:
  """CLIP's (M, D) text embeddings, from the cache or computed (batches
  shared out over the processes)."""
  processes, m = stages.processes, len(texts)
  text_key = clip_cached.text_key(cache, embedder, texts)
  with _main_locked(cache, text_key, processes):
    if _in_cache(processes, lambda: cache.has(text_key)):
      logging.info("cache hit: %s text embeddings (%d concepts)",
                   embedder.kind, m)
      return cache.load(text_key), text_key
    logging.info("computing: %s text embeddings (%d concepts)",
                 embedder.kind, m)
    num_devices = embedder.data_parallel.num_devices * processes.count
    batch_size = preflight.text_batch_size(config)
    text_emb = stages.run("clip_text", lambda: processes.sum(
        embedder.embed_texts(texts, batch_size=batch_size,
                             share=(processes.index, processes.count))),
        devices=num_devices)
    if processes.is_main:
      cache.save(text_key, text_emb, {"clip": embedder.identity(),
                                      "num_texts": m})
  return text_emb, text_key


def load_clip(config) -> clip.ClipEmbedder:
  """The backbone (CLIP or SigLIP) of describe_neurons' options
  (clip_model, clip_seed, clip_tokenizer, clip_config, activation_dir,
  devices, compute_dtype), as describe_neurons loads it; pass it back as
  `embedder` to load it once for several runs."""
  config = config_lib.full_config(config)
  return clip.load_embedder(
      config.clip_model, seed=config.clip_seed,
      tokenizer=config.clip_tokenizer,
      config_overrides=config.clip_config.to_dict(),
      work_dir=os.path.abspath(os.path.expanduser(config.activation_dir)),
      devices=config.devices, compute_dtype=config.compute_dtype)


def _concept_activations(config, cache, probe, concept_set, stages, given_p,
                         embedder=None
                         ) -> tuple[np.ndarray, dict[str, str], str,
                                    dict[str, Any]]:
  """P (N, M) from a given file or from the backbone (CLIP or SigLIP,
  cached; `embedder` if given, else loaded from the options).

  Returns:
    (P, {name: path} of P and the embeddings, a digest of P's content,
    the backbone's record (clip.cached.describe; {} for a given P)).
  """
  n, m = len(probe), len(concept_set)
  if given_p is not None:
    return (*_given_p(config.concept_activations, given_p, cache,
                      stages.processes), {})

  processes = stages.processes
  if embedder is None:
    embedder = stages.run("clip_load", lambda: load_clip(config))
  num_devices = embedder.data_parallel.num_devices * processes.count
  clip_id = embedder.identity()
  text_emb, text_key = _text_embeddings(config, cache, embedder,
                                        concept_set.texts(), stages)

  image_key = clip_cached.image_key(cache, embedder, probe.fingerprint())
  inputs = loader.InputStats()
  batches = _probe_batches(config, probe, embedder.transform, inputs)

  def embed(ranges, names):
    del names
    return shard_grid.rows_by_range(
        ({"image": e} for e in embedder.iter_embed_batches(
            batches(ranges), batch_size=config.batch_size,
            num_images=shard_grid.total_rows(ranges))), ranges)

  image_emb = stages.run("clip_images", lambda: cache.rows(
      {"image": image_key}, f"{embedder.kind} image embeddings", n,
      config.shard_images,
      embed, {"image": {"clip": clip_id, "probe": probe.describe()}},
      processes=processes)["image"], devices=num_devices, inputs=inputs)

  p_key = clip_cached.p_key(cache, image_key, text_key, config.p_dtype)
  with _main_locked(cache, p_key, processes):
    if _in_cache(processes, lambda: cache.has(p_key)):
      logging.info("cache hit: concept activations P (%d x %d)", n, m)
    else:
      logging.info("computing: concept activations P (%d x %d)", n, m)
      if processes.is_main:
        stages.run("concept_activations", lambda: cache.save_with(
            p_key, lambda path: clip.write_concept_activations(
                path, image_emb, text_emb, config.p_dtype)), processes=1)
      processes.barrier("concept activations written")
  p = cache.load(p_key)
  preflight.check_p_columns(p, f"concept activations P ({cache.path(p_key)})")
  return p, {
      "concept_activations": cache.path(p_key),
      "image_embeddings": cache.path(image_key),
      "text_embeddings": cache.path(text_key)}, p_key, (
          clip_cached.describe(embedder))


# ----------------------------------------------------------------------------
# 4. A, the activations.
# ----------------------------------------------------------------------------


def _activations(config, cache, probe, target: _Target, stages
                 ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Pooled activations (N, K) per layer, from the cache or computed."""
  inputs = loader.InputStats()
  batches = _probe_batches(config, probe, target.spec.transform, inputs)

  def compute(ranges, names):
    return shard_grid.rows_by_range(act_lib.iter_activations(
        target.module, target.variables, batches(ranges), names,
        pool=target.pool, batch_size=config.batch_size,
        num_images=shard_grid.total_rows(ranges), token_pool=target.token_pool,
        devices=config.devices, compute_dtype=config.compute_dtype), ranges)

  describe = {l: {"model": config.target_model, "layer": l,
                  "pool": target.pool, "token_pool": target.token_pool,
                  "compute_dtype": config.compute_dtype,
                  "probe": probe.describe()}
              for l in target.keys}
  processes = stages.processes
  num_devices = len(data_parallel.local_devices(config.devices))
  arrays = stages.run("activations", lambda: cache.rows(
      target.keys, "activations", len(probe), config.shard_images, compute,
      describe, processes=processes),
      devices=num_devices * processes.count, inputs=inputs)
  return arrays, {l: cache.path(k) for l, k in target.keys.items()}


# ----------------------------------------------------------------------------
# 5. Similarity and labels.
# ----------------------------------------------------------------------------


def _kernel_devices(config, processes: distributed.Processes
                    ) -> tuple[list[jax.Device], str]:
  """(devices, method) of similarity.compute for the `sharding` and
  `devices` options: the devices of every process, or process 0's first
  one for sharding="none" (or when there is only one)."""
  devices = data_parallel.kernel_devices(config.devices)
  if config.sharding == "none" or len(devices) == 1:
    return [jax.local_devices()[0]], "shard_map"
  return devices, ("shard_map" if config.sharding == "auto"
                   else config.sharding)


def _layer_neurons(config, cache, layer, a, a_key, p, p_key, concepts,
                   image_ids, kwargs, processes: distributed.Processes
                   ) -> tuple[list[results_lib.Neuron], int]:
  """The layer's labelled neurons (cached as a JSON entry) on process 0
  (none on the others), and the devices the kernel ran on (0 if cached).
  """
  hyper = {k: v for k, v in kwargs.items() if k != "key"}
  key = cache.key("labels", activations=a_key, concept_activations=p_key,
                  fn=config.similarity_fn, hyper=hyper, seed=config.seed,
                  concepts=concepts, format=_LABELS_FORMAT)
  num_devices = 0
  with _main_locked(cache, key, processes):
    saved = cache.load_json(key) if processes.is_main else None
    if processes.agree([saved is not None])[0]:
      logging.info("cache hit: labels of %s", layer)
    else:
      logging.info("computing: labels of %s (%d neurons x %d concepts, %s)",
                   layer, a.shape[1], len(concepts), config.similarity_fn)
      devices, method = _kernel_devices(config, processes)
      num_devices = len(devices)
      if num_devices == 1 and not processes.is_main:
        saved = None  # Process 0 runs the kernel alone.
      else:
        a = np.asarray(a, np.float32)
        sim = similarity.compute(config.similarity_fn, a, p, seed=config.seed,
                                 devices=devices, method=method, **kwargs)
        saved = None
        if processes.is_main:
          vals, idx = similarity.top_concepts(
              sim, results_lib.TOP_ALTERNATIVES + 1)
          del sim
          n_top = min(results_lib.TOP_IMAGES, a.shape[0])
          top_images = np.argsort(-a, axis=0, kind="stable")[:n_top].T
          saved = {"values": vals.tolist(), "concepts": idx.tolist(),
                   "top_images": top_images.tolist()}
          cache.save_json(key, saved)
  if saved is None:
    return [], num_devices
  return [
      results_lib.Neuron(
          layer=layer, unit=k, description=concepts[idx[0]],
          similarity=float(vals[0]),
          alternatives=tuple((concepts[i], float(v))
                             for i, v in zip(idx[1:], vals[1:])),
          top_images=tuple(image_ids[i] for i in top))
      for k, (vals, idx, top) in enumerate(zip(
          saved["values"], saved["concepts"], saved["top_images"]))], (
              num_devices)


# ----------------------------------------------------------------------------
# The method.
# ----------------------------------------------------------------------------


def describe_neurons(config: ml_collections.ConfigDict | dict, *,
                     embedder: clip.ClipEmbedder | None = None
                     ) -> results_lib.Run:
  """Labels every neuron of the chosen layers; writes `config.result_dir`.

  With several processes (jax.distributed initialized by the caller, the
  same config in every process, `activation_dir` on a file system they all
  see) the stages are shared out and process 0 writes the results.

  Args:
    config: options, see `config.default_config()` (missing keys take defaults).
    embedder: the run's CLIP, already loaded (`load_clip(config)`), e.g. to
      load it once for a series of runs; its identity keys the cache, so a
      CLIP other than the config's gives other entries (the config's
      clip_model is what config.json records: pass the config's own).

  Returns:
    The run as written to result_dir (descriptions.csv, neurons.jsonl,
    config.json, concepts.txt, image_ids.txt, arrays.json; see
    docs/results_format.md); its config holds the stage timings under
    "timings_s" and what each stage ran on under "stages". On processes
    other than 0 nothing is written and the Run has no neurons.

  Raises:
    ValueError: for bad options (unknown model, layer, data set, similarity
      function, concept file...) with a message naming the value and the
      valid ones.
    distributed.PeerLostError: if another process of the run stopped.
  """
  config = config_lib.full_config(config)
  layers = config_lib.split_layers(config.target_layers)
  processes = distributed.Processes.current()
  if processes.count > 1 and config.sharding == "pmap":
    raise ValueError("sharding='pmap' runs on one process's devices; use "
                     "auto or shard_map with several processes")
  data_parallel.local_devices(config.devices)  # Checks the count.
  # Checks of paths, files and names, before any expensive stage.
  preflight.check_paths(config)
  given_p = (preflight.read_p_file(config.concept_activations)
             if config.concept_activations else None)
  preflight.check_models(config)
  stages = _Stages(processes)
  cache = cache_lib.ArrayCache(config.activation_dir,
                               verify=config.cache_verify)
  processes.check_same("config", config.to_json(sort_keys=True))
  processes.check_shared_directory(cache.root, "activation_dir")

  # 1. Concepts and probe images.
  concept_set = concepts_lib.read_concepts(config.concept_set,
                                           config.prompt_template)
  if len(concept_set) < 2:
    raise ValueError(f"concept set {config.concept_set!r} has "
                     f"{len(concept_set)} concept; at least 2 are needed")
  concepts = list(concept_set.concepts)
  preflight.check_kernel(config, None, len(concepts))
  if given_p is not None:
    preflight.check_p_shape(config.concept_activations, given_p, None,
                            len(concepts))
  probe, skipped = _probe_set(config, cache, stages)
  logging.info("probe set: %s; %d concepts from %s", probe.describe(),
               len(concepts), config.concept_set)
  # Plan (and so validate) the kernel for N before any expensive stage.
  kwargs = preflight.check_kernel(config, len(probe), len(concepts))
  if given_p is not None:
    preflight.check_p_shape(config.concept_activations, given_p, len(probe),
                            len(concepts))
  if config.score_labels:
    _check_score_labels(len(probe))

  # 2. The target and its layer names, checked before any long stage.
  target = _Target(config, cache, probe, layers, stages)
  # 3. P.
  p, p_paths, p_key, backbone = _concept_activations(
      config, cache, probe, concept_set, stages, given_p, embedder)
  # The presence parameters scoring uses for this backbone (documented, or
  # fitted to its P), written into the run.
  presence = scoring.presence_params_for(scoring.run_backbone(config), p)
  logging.info("concept presence of %s: a=%.4g, b=%.4g (%s)",
               presence.backbone or "the given P", presence.a, presence.b,
               presence.source)
  # 4. A.
  acts, act_paths = _activations(config, cache, probe, target, stages)
  # 5. Labels.
  p_device = jax.numpy.asarray(np.asarray(p, np.float32))
  image_ids = list(probe.ids)
  neurons = []
  for layer in layers:
    name = f"similarity_{layer}"
    found, num_devices = stages.run(name, lambda: _layer_neurons(
        config, cache, layer, acts[layer], act_paths[layer], p_device, p_key,
        concepts, image_ids, kwargs, processes))
    stages.records[name].update(devices=num_devices, processes=(
        processes.count if num_devices > 1 else 1))
    neurons += found
  # 6. The results directory (process 0).
  config_dict = {**config.to_dict(), "token_pool": target.token_pool,
                 "token_pool_name": config.token_pool,
                 "similarity_kwargs": {
      k: v for k, v in kwargs.items() if k != "key"},
                 "jax_dissect_version": jax_dissect.__version__,
                 "device_list": [str(d) for d in jax.devices()],
                 "processes": processes.count,
                 "num_images": len(probe), "num_concepts": len(concepts),
                 "num_skipped_images": len(skipped),
                 "backbone": backbone,
                 "concept_presence": presence.to_json(),
                 "timings_s": stages.timings, "stages": stages.records}
  arrays = {"cache_root": cache.root, **p_paths, "activations": act_paths}
  result_dir = os.path.abspath(config.result_dir)
  if processes.is_main:
    results_lib.write_run(result_dir, neurons=neurons, concepts=concepts,
                          image_ids=image_ids, config=config_dict,
                          arrays=arrays, skipped_images=skipped)
    logging.info("wrote %s (%d layers, %d neurons)", config.result_dir,
                 len(layers), len(neurons))
  processes.barrier("results written")
  run = results_lib.Run(path=result_dir, neurons=neurons,
                        config=config_dict, concepts=concepts,
                        image_ids=image_ids, arrays=arrays,
                        skipped_images=skipped)
  if config.score_labels and processes.is_main:
    # Process 0 alone: the analysis reads the run it wrote, on its devices.
    stages.run("score_labels", lambda: _score_labels(run), processes=1)
  return run


def _check_score_labels(num_images: int) -> None:
  """The scoring analysis' default split must leave enough held-out images."""
  config = analyses.make_config("scoring")
  try:
    scoring.split_indices(num_images, config.split, config.seed)
  except ValueError as e:
    raise ValueError(f"score_labels: {e}") from None


def _score_labels(run: results_lib.Run) -> None:
  """Runs the scoring analysis on the run; writes <run>/analysis."""
  output = analyses.run("scoring", run)
  paths = results_lib.write_analysis(output, run.analysis_dir())
  for line in output.summary:
    logging.info("score_labels: %s", line)
  logging.info("wrote %s", ", ".join(paths.values()))
