"""describe_and_dissect: the three stages for some neurons of one layer.

    target = dnd.Target.load("resnet50", weights=...)
    store = dnd.CacheStore("cache/dnd")
    results = dnd.describe_and_dissect(
        target, probe_paths, "layer4", [12, 345],
        captioner="default", llm="default", generator="default",
        clip_embedder="default", store=store)
    for r in results:
      print(r.unit, r.description, r.candidates)

Everything is checked before any model runs (the layer, the units, the
probe set, the settings, which models the selection needs), and every
stage's outputs are saved in `store` as soon as they are computed, so bad
input costs nothing and a killed or failed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

from absl import logging
import numpy as np

from jax_dissect.analyses.dnd import candidates as candidates_lib
from jax_dissect.analyses.dnd import config as config_lib
from jax_dissect.analyses.dnd import crops as crops_lib
from jax_dissect.analyses.dnd import images as images_lib
from jax_dissect.analyses.dnd import models as models_lib
from jax_dissect.analyses.dnd import selection as selection_lib
from jax_dissect.analyses.dnd import store as store_lib
from jax_dissect.analyses.dnd import target as target_lib
from jax_dissect.store import integrity

CSV_COLUMNS = ("layer", "unit", "description", "label_2", "label_3",
               "candidates", "score")


@dataclasses.dataclass(frozen=True)
class DnDResult:
  """One neuron's description.

  Attributes:
    layer, unit: the neuron.
    labels: its best `num_labels` candidates, best first (labels[0] is the
      description).
    candidates: all its candidate concepts, in generation order.
    score: the best label's score (selection="generation": combined score,
      higher is better; "clip_dissect": the kernel's similarity).
    captions: captions of its top images.
    simplified: the captions shortened by the language model.
    crops: its stage-1 images and crops.
    selection: per-candidate numbers behind the ranking.
  """
  layer: str
  unit: int
  labels: tuple[str, ...]
  candidates: tuple[str, ...]
  score: float
  captions: tuple[str, ...]
  simplified: tuple[str, ...]
  crops: crops_lib.NeuronCrops
  selection: selection_lib.Selection

  @property
  def description(self) -> str:
    return self.labels[0]

  def row(self) -> dict[str, Any]:
    """The CSV row: CSV_COLUMNS (candidates joined with "; ")."""
    labels = list(self.labels) + ["", ""]
    return {"layer": self.layer, "unit": self.unit,
            "description": labels[0], "label_2": labels[1],
            "label_3": labels[2], "candidates": "; ".join(self.candidates),
            "score": self.score}


def check_units(units: Sequence[int] | None, num_units: int,
                layer: str) -> list[int]:
  """The neuron indices to describe (None: all), checked.

  Raises:
    ValueError: for an empty list, a non-integer, a unit outside
      [0, num_units) or a repeated unit.
  """
  if units is None:
    return list(range(num_units))
  units = list(units)
  if not units:
    raise ValueError(f"units is empty; name at least one unit of layer "
                     f"{layer!r} (0..{num_units - 1}) or pass None for all")
  for u in units:
    if isinstance(u, bool) or not isinstance(u, (int, np.integer)):
      raise ValueError(f"unit {u!r} is not an integer; layer {layer!r} has "
                       f"units 0..{num_units - 1}")
    if not 0 <= u < num_units:
      raise ValueError(f"unit {u} is out of range; layer {layer!r} has "
                       f"units 0..{num_units - 1}")
  seen = set()
  for u in units:
    if u in seen:
      raise ValueError(f"unit {u} is listed twice")
    seen.add(u)
  return [int(u) for u in units]


def _probe_fingerprint(probe_images: Sequence[Any]) -> str:
  return integrity.fingerprint(images_lib.fingerprints(probe_images))


def _probe_activations(target, probe_images, layer, given, store, num_units
                       ) -> np.ndarray:
  if given is not None:
    a = np.asarray(given, np.float32)
    if a.ndim != 2 or a.shape != (len(probe_images), num_units):
      raise ValueError(f"probe_activations has shape {a.shape}; expected "
                       f"({len(probe_images)}, {num_units}) for layer "
                       f"{layer!r}")
    return a
  key = store.key("probe_acts", target=target.identity, layer=layer,
                  probe=_probe_fingerprint(probe_images))
  a = store.get_array(key)
  if a is None:
    a = target.pooled(images_lib.LazyImages(probe_images), layer)
    store.put_array(key, a)
  return a


def _probe_embeddings(clip_embedder, probe_images, given, store
                      ) -> np.ndarray:
  if given is not None:
    e = np.asarray(given, np.float32)
    if e.ndim != 2 or e.shape[0] != len(probe_images):
      raise ValueError(f"probe_image_embeddings has shape {e.shape}; "
                       f"expected ({len(probe_images)}, D)")
    return e
  return selection_lib.embed_images(
      clip_embedder, images_lib.LazyImages(probe_images),
      _probe_fingerprint(probe_images), store)


def _check_models(config, captioner, llm, generator, clip_embedder) -> None:
  missing = [name for name, model in (("captioner", captioner),
                                      ("llm", llm)) if model is None]
  if config.selection == "generation":
    missing += [n for n, m in (("generator", generator),
                               ("clip_embedder", clip_embedder)) if m is None]
  elif clip_embedder is None:
    missing.append("clip_embedder")
  if missing:
    raise ValueError(f"selection={config.selection!r} needs "
                     f"{', '.join(missing)}"
                     "; pass a callable, a 'package.module:function', a hub "
                     "id or a directory, or 'default'")


def describe_and_dissect(target: target_lib.Target,
                         probe_images: Sequence[Any], layer: str,
                         units: Sequence[int] | None = None, *,
                         captioner: Any, llm: Any, generator: Any = None,
                         clip_embedder: Any = None,
                         config: config_lib.DnDConfig | None = None,
                         store: store_lib.Store,
                         probe_activations: np.ndarray | None = None,
                         probe_image_embeddings: np.ndarray | None = None
                         ) -> list[DnDResult]:
  """Describes neurons `units` of `layer` in words (Describe-and-Dissect).

  Args:
    target: the network (`Target`).
    probe_images: N probe images: file paths, PIL images or uint8 arrays.
    layer: the layer's dotted path (see `Target.layer_shapes`).
    units: neuron indices; None for every neuron of the layer.
    captioner: images -> captions callable, or a spec (models.resolve).
    llm: prompt -> answer callable, or a spec.
    generator: (prompt, num_images, seed) -> images callable, or a spec;
      needed for selection="generation".
    clip_embedder: object with embed_images (and embed_texts for
      "clip_dissect"), e.g. jax_dissect.clip.ClipEmbedder, or a spec.
    config: settings (DnDConfig(); the original's defaults).
    store: where every stage's outputs are kept (e.g. CacheStore(dir)).
    probe_activations: (N, K) pooled activations of the layer on the probe
      images, if already known (e.g. a describe_neurons run's cache);
      computed (and stored) otherwise.
    probe_image_embeddings: (N, D) CLIP embeddings of the probe images for
      "clip_dissect", if already known; computed (and stored) otherwise.

  Returns:
    One DnDResult per unit, in the order of `units`.

  Raises:
    ValueError: one line naming the bad input (unknown layer, no or bad
      units, empty probe set, missing models, a model's bad output such as
      a generator's wrong shape or an empty answer of the language model).
      Stages finished before the error stay in `store`.
  """
  config = config or config_lib.DnDConfig()
  if not len(probe_images):  # pylint: disable=g-explicit-length-test
    raise ValueError("probe_images is empty")
  shape = target.check_layer(layer)
  units = check_units(units, shape[-1], layer)
  captioner = models_lib.resolve(captioner, "captioner")
  llm = models_lib.resolve(llm, "llm")
  generator = models_lib.resolve(generator, "generator")
  clip_embedder = models_lib.resolve(clip_embedder, "clip")
  _check_models(config, captioner, llm, generator, clip_embedder)
  times = {}

  start = time.perf_counter()
  acts = _probe_activations(target, probe_images, layer, probe_activations,
                            store, shape[-1])
  crops = crops_lib.attention_crops(target, probe_images, layer, units, acts,
                                    config, store)
  loaded: dict[int, Any] = {}
  top, prints = {}, {}
  for u in units:
    top[u] = crops_lib.top_images(crops[u], probe_images, config.image_size,
                                  loaded)
    prints[u] = [integrity.fingerprint(
        images_lib.fingerprint(probe_images[crops[u].sources[i]]),
        crops[u].boxes[i], config.image_size)[:24] for i in crops[u].top]
  times["crops"] = time.perf_counter() - start

  start = time.perf_counter()
  captions = candidates_lib.caption_stage(captioner, top, prints, store,
                                          config.unit_chunk)
  simplified = candidates_lib.simplify_stage(llm, captions, store,
                                             config.unit_chunk)
  cands = candidates_lib.candidate_stage(llm, simplified,
                                         config.num_candidates, config.seed,
                                         store, config.unit_chunk)
  times["candidates"] = time.perf_counter() - start

  start = time.perf_counter()
  cand_lists = {u: cands[u]["candidates"] for u in units}
  if config.selection == "generation":
    chosen = selection_lib.select_by_generation(
        target, layer, cand_lists, {u: (top[u], prints[u]) for u in units},
        generator, clip_embedder, config, store)
  else:
    chosen = selection_lib.select_by_clip_dissect(
        acts, _probe_embeddings(clip_embedder, probe_images,
                                probe_image_embeddings, store),
        cand_lists, clip_embedder, config, store)
  times["selection"] = time.perf_counter() - start
  logging.info("DnD %s: %d units; stage seconds %s", layer, len(units),
               {k: round(v, 2) for k, v in times.items()})
  return [DnDResult(layer, u, chosen[u].labels[:config.num_labels],
                    tuple(cand_lists[u]), chosen[u].score,
                    tuple(captions[u]), tuple(simplified[u]), crops[u],
                    chosen[u]) for u in units]
