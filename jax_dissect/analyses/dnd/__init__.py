r"""Describe-and-Dissect: open-vocabulary descriptions of a run's neurons.

  python scripts/describe_and_dissect.py --results_dir=results/rn50 \
      --layer=layer4 --units=12,345 --captioner=my_models:blip \
      --llm=my_models:chat --generator=my_models:sd15

For each chosen neuron of one layer of a describe_neurons run, no concept set
needed: its most activating probe images and their attention crops are
captioned, a language model distils candidate concepts from the captions, and
the candidate whose generated images the neuron responds to most is chosen (Bai,
Iyer, Oikarinen, Kulkarni, Weng, "Interpreting Neurons in Deep Vision Networks
with Language Models", TMLR 2025; docs/dnd.md). The run supplies the target
(rebuilt from config.json), the probe images (rebuilt from its d_probe options;
ids checked against image_ids.txt), the layer's cached activations A and, with
clip=run, its CLIP and cached probe image embeddings. Every stage's outputs are
kept in the run's cache directory, so a killed run resumes and a second run
computes nothing.

Writes dnd.csv (layer, unit, description, label_2, label_3, candidates,
score; the report shows the description and score beside each neuron's
CLIP-Dissect label) and dnd_details.json (per neuron: its top images and
crop boxes, captions, shortened captions, candidates and the numbers behind
the ranking).

Stages (one module each, every model a replaceable callable):

- crops.py: top images and Otsu attention crops (regions.py: Otsu, boxes);
- candidates.py: captions -> simplified captions -> candidate concepts
  (the prompts live there);
- selection.py: generate images per candidate and rank them by the
  neuron's activation, weighted by CLIP similarity; or score candidates
  with a CLIP-Dissect kernel on the probe set;
- models.py: the spec resolver and default Flax models;
- store.py: content-keyed storage of every stage's outputs;
- target.py: the target network's activations on any images;
- run.py: `describe_and_dissect`, all stages for some neurons of a layer;
- this module: the analysis adapter (NAME, get_config, run).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections
import numpy as np

from jax_dissect import clip
from jax_dissect import models as models_lib
from jax_dissect import similarity
from jax_dissect.analyses.dnd import config as dnd_config_lib
from jax_dissect.analyses.dnd import images as dnd_images
from jax_dissect.analyses.dnd import models as dnd_models
from jax_dissect.analyses.dnd import run as dnd_run
from jax_dissect.analyses.dnd import store as dnd_store
from jax_dissect.analyses.dnd import target as dnd_target
from jax_dissect.analyses.dnd.config import DnDConfig
from jax_dissect.analyses.dnd.run import CSV_COLUMNS
from jax_dissect.analyses.dnd.run import describe_and_dissect
from jax_dissect.analyses.dnd.run import DnDResult
from jax_dissect.analyses.dnd.store import CacheStore
from jax_dissect.analyses.dnd.store import Store
from jax_dissect.analyses.dnd.target import Target
from jax_dissect.data import probes as data_lib
from jax_dissect.runtime import options
from jax_dissect.store import results as results_lib

__all__ = [
    "CacheStore", "CSV_COLUMNS", "describe_and_dissect", "DESCRIPTION",
    "DnDConfig", "DnDResult", "get_config", "NAME", "run", "RUN_CLIP",
    "run_probe_images", "Store", "Target",
]

NAME = "dnd"
DESCRIPTION = ("Describe-and-Dissect: open-vocabulary descriptions of chosen "
               "neurons (captioner, language model, text-to-image model).")
RUN_CLIP = "run"


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.layer = ""  # Layer of the neurons to describe (required).
  c.units = ("all",)  # Neuron indices (comma-separated), or all.
  # Image captioner (images -> captions): package.module:function, a hub id
  # or local directory of a Flax VisionEncoderDecoder model, or default.
  c.captioner = "default"
  # Language model (prompt -> answer): package.module:function, a hub id or
  # local directory of a Flax causal or seq2seq LM, or default.
  c.llm = "default"
  # Text-to-image model ((prompt, n, seed) -> n images), for
  # selection=generation: package.module:function, a hub id or local
  # directory of a Flax Stable Diffusion pipeline, or default.
  c.generator = "default"
  # CLIP: run (the run's own, rebuilt from config.json; its cached probe
  # image embeddings are reused), package.module:function, a hub id or
  # local directory, or default.
  c.clip = RUN_CLIP
  # generation (the original's: rank generated images) or clip_dissect
  # (score candidates on the probe set with a similarity function).
  c.selection = "generation"
  c.num_images = 10  # Most activating probe images (and crops) per neuron.
  c.num_crops = 4  # Most attention crops per image (conv layers).
  c.image_size = 375  # Side of the square each top image is resized to.
  c.max_crop_overlap = 0.5  # Largest IoU between two crops of one image.
  c.max_full_image_iou = 0.8  # A crop's IoU with its image must be below.
  c.num_candidates = 5  # Candidate concepts (LLM summaries) per neuron.
  c.num_generated = 10  # Images generated per candidate concept.
  c.beta = 5  # Best squared ranks a candidate's rank score averages.
  # Generated images among this many most activating count for the CLIP
  # weight.
  c.clip_top_k = 10
  c.prompt_template = "One realistic image of {}"  # {} is the candidate.
  # Side generated images are resized to before scoring (the original's
  # 32; 0 keeps the generator's size).
  c.generated_image_size = 32
  # Similarity function of selection=clip_dissect (default: the run's).
  c.similarity_fn = ""
  c.seed = 0  # Seed of the caption shuffles and of the generator.
  c.unit_chunk = 64  # Neurons whose stages are saved together.
  c.batch_size = 0  # Images per target pass (0: the run's batch_size).
  # The run's target model (default: config.json's registry name); a
  # package.module:function target must be given here, it is never run from
  # the run's files.
  c.target_model = ""
  # Where the stages' outputs are kept (default: the run's cache directory).
  c.store_dir = ""
  return c


# ----------------------------------------------------------------------------
# What the run supplies.
# ----------------------------------------------------------------------------


def run_probe_images(results: results_lib.Run) -> list[Any]:
  """The run's probe images in row order (row i of A is image_ids[i]).

  The probe set is rebuilt by data.run_probe_set (no download; checked
  against the run's image ids).

  Returns:
    File paths for image folders, else dnd.images.ProbeImage items.

  Raises:
    ValueError: the probe set cannot be rebuilt or no longer matches.
  """
  return dnd_images.probe_images(data_lib.run_probe_set(results))


def _run_clip(results: results_lib.Run) -> tuple[Any, np.ndarray]:
  """(the run's CLIP, loaded lazily; its cached probe image embeddings)."""
  if "image_embeddings" not in results.arrays:
    raise ValueError("the run has no CLIP image embeddings (it was given "
                     "precomputed concept_activations): pass clip=<package."
                     "module:function, hub id or directory>")
  embeddings = results.image_embeddings()
  # The cache key of the embeddings covers the CLIP's weights and settings.
  key = os.path.splitext(os.path.basename(
      results.arrays["image_embeddings"]))[0]

  def load():
    return clip.load_run_embedder(results.config)

  return dnd_models.Lazy(load, f"run-clip:{key}"), embeddings


def _target(results: results_lib.Run, batch_size: int,
            target_model: str = "") -> dnd_target.Target:
  cfg = results.config
  name = models_lib.run_target_model(
      cfg, target_model, os.path.join(results.path, results_lib.CONFIG_JSON))
  return dnd_target.Target.load(
      name, cfg.get("target_weights"),
      int(cfg.get("target_seed", 0)), pool=cfg.get("pool_mode", "avg"),
      token_pool=cfg.get("token_pool", "cls"),
      batch_size=batch_size or int(cfg.get("batch_size") or 32))


# ----------------------------------------------------------------------------
# Options.
# ----------------------------------------------------------------------------


def _units(values: Any, num_units: int, layer: str) -> list[int] | None:
  """The units option: None for all, else checked indices."""
  if isinstance(values, str):
    values = values.split(",")
  values = [v.strip() if isinstance(v, str) else v for v in values]
  if values == ["all"]:
    return None
  values = [v for v in values if v != ""]
  if not values:
    raise ValueError(f"units is empty; name neurons of layer {layer!r} "
                     f"(0..{num_units - 1}), e.g. units=0,5, or units=all")
  return dnd_run.check_units(options.integers("units", values), num_units,
                             layer)


def _dnd_config(results: results_lib.Run, config
                ) -> dnd_config_lib.DnDConfig:
  fn = config.similarity_fn or results.similarity_fn
  options.choice("similarity_fn", fn, similarity.names())
  return dnd_config_lib.DnDConfig(
      num_images=config.num_images, num_crops=config.num_crops,
      image_size=config.image_size,
      max_crop_overlap=config.max_crop_overlap,
      max_full_image_iou=config.max_full_image_iou,
      num_candidates=config.num_candidates,
      num_generated=config.num_generated, beta=config.beta,
      clip_top_k=config.clip_top_k, prompt_template=config.prompt_template,
      generated_image_size=options.integer(
          "generated_image_size", config.generated_image_size, minimum=0)
      or None,
      selection=config.selection, similarity_fn=fn,
      similarity_kwargs=results.kernel_kwargs(fn), seed=config.seed,
      unit_chunk=config.unit_chunk)


# ----------------------------------------------------------------------------
# The analysis.
# ----------------------------------------------------------------------------


def _details(results: results_lib.Run, r: dnd_run.DnDResult
             ) -> dict[str, Any]:
  crops = r.crops
  return {
      "layer": r.layer, "unit": r.unit, "labels": list(r.labels),
      "candidates": list(r.candidates), "score": r.score,
      "top_images": [{"image": results.image_ids[crops.sources[i]],
                      "box": None if crops.boxes[i] is None
                      else list(crops.boxes[i]),
                      "activation": crops.activations[i]}
                     for i in crops.top],
      "captions": list(r.captions), "simplified": list(r.simplified),
      "selection": list(r.selection.details)}


def _cache_summary(store: dnd_store.CacheStore) -> str:
  computed = store.computed()
  hits = sum(v for k, v in store.stats.items() if k.endswith(":hit"))
  if not computed:
    return f"cache: every stage from the cache ({hits} entries), 0 computed"
  return (f"cache: {hits} entries from the cache, {sum(computed.values())} "
          "computed (" + ", ".join(f"{k} {v}" for k, v in computed.items())
          + ")")


def run(results: results_lib.Run, config) -> results_lib.AnalysisOutput:
  # Every option first (one-line errors), then the run's pieces, then work.
  if not config.layer:
    raise ValueError("layer is required: the layer whose neurons to "
                     f"describe, one of {', '.join(results.layers)}")
  layer = results.check_layer(config.layer)
  acts = results.activations(layer)
  if acts.ndim != 2 or acts.shape[0] != len(results.image_ids):
    raise ValueError(f"the cached activations of {layer!r} have shape "
                     f"{acts.shape}; expected ({len(results.image_ids)}, K)")
  units = _units(config.units, acts.shape[1], layer)
  dnd_config = _dnd_config(results, config)
  batch_size = options.integer("batch_size", config.batch_size, minimum=0)
  generator = ((config.generator or None)
               if dnd_config.selection == "generation" else None)
  clip_spec, probe_embeddings = config.clip, None
  if clip_spec == RUN_CLIP:
    clip_spec, probe_embeddings = _run_clip(results)
  models = {kind: dnd_models.resolve(spec or None, kind) for kind, spec in (
      ("captioner", config.captioner), ("llm", config.llm),
      ("generator", generator), ("clip", clip_spec))}
  store = dnd_store.CacheStore(config.store_dir or results.cache_dir())
  probe = run_probe_images(results)
  target = _target(results, batch_size, config.target_model)

  described = dnd_run.describe_and_dissect(
      target, probe, layer, units, captioner=models["captioner"],
      llm=models["llm"], generator=models["generator"],
      clip_embedder=models["clip"], config=dnd_config, store=store,
      probe_activations=acts, probe_image_embeddings=probe_embeddings)
  rows = [r.row() for r in described]
  return results_lib.AnalysisOutput(
      analysis=NAME,
      tables={NAME: results_lib.Table(
          rows, f"Describe-and-Dissect descriptions ({layer})",
          per_neuron=True, neuron_columns=("description", "score"))},
      documents={f"{NAME}_details": [_details(results, r)
                                     for r in described]},
      summary=[f"{r.layer} unit {r.unit}: {r.description!r} "
               f"(score {r.score:.4g})" for r in described]
      + [_cache_summary(store)])
