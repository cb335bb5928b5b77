"""How much bfloat16 and float16 forward passes change embeddings and labels.

Runs describe_neurons on smoke configs (random target, small random CLIP,
the shared ImageNet photos) with compute_dtype float32, bfloat16 and
float16, and compares each half-precision run with the float32 one:
the largest difference of CLIP's unit-norm image and text embeddings and
of P, and per layer the largest difference of the pooled activations
(relative to the layer's largest float32 activation) and the share of
neurons whose label changes.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Iterator

import numpy as np

PRESETS = {
    "full": dict(configs=("resnet18_cifar100:smoke", "resnet18_places365:smoke",
                          "resnet50_imagenet:smoke"),
                 max_images=0, dtypes=("bfloat16", "float16")),
    "quick": dict(configs=("resnet18_cifar100:smoke",), max_images=24,
                  dtypes=("bfloat16",)),
}


def _config(spec: str, max_images: int, dtype: str, tmp: str,
            overrides: dict | None):
  import importlib  # pylint: disable=g-import-not-at-top
  module, arg = spec.split(":")
  config = importlib.import_module(f"configs.{module}").get_config(arg)
  if max_images >= 0:
    config.max_images = max_images  # 0: all 1000 photos.
  config.compute_dtype = dtype
  config.result_dir = os.path.join(tmp, f"{module}-{dtype}")
  config.activation_dir = os.path.join(tmp, "cache")
  config.update(overrides or {})
  return config


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) -
                             np.asarray(b, np.float64))))


def _label_changes(ref_neurons, half_neurons) -> dict:
  """How many labels change, and how close the float32 run had them."""
  changed = [(r, h) for r, h in zip(ref_neurons, half_neurons)
             if r.description != h.description]
  # Where the float32 run ranked the new label, and its score gap.
  in_top, gaps = 0, []
  for r, h in changed:
    scores = dict(r.alternatives)
    if h.description in scores:
      in_top += 1
      gaps.append(r.similarity - scores[h.description])
  return {"neurons": len(ref_neurons),
          "labels_changed": len(changed) / max(len(ref_neurons), 1),
          "changed_new_label_in_float32_top6": (
              in_top / len(changed) if changed else None),
          "changed_median_gap_float32": (
              float(np.median(gaps)) if gaps else None),
          # The largest float32 margin a label lost (a new label outside
          # the runners-up counts as an unknown, larger margin).
          "changed_max_gap_float32": (
              float(np.max(gaps)) if gaps else None)}


def _compare(ref, run) -> dict:
  out = {f"{k}_max_abs_diff": _max_abs(np.asarray(getattr(run, k)()),
                                       np.asarray(getattr(ref, k)()))
         for k in ("image_embeddings", "text_embeddings",
                   "concept_activations")}
  layers = {}
  for layer in ref.layers:
    a = np.asarray(ref.activations(layer))
    b = np.asarray(run.activations(layer))
    layers[layer] = {
        "activations_max_rel_diff": _max_abs(b, a) / max(
            float(np.abs(a).max()), 1e-30),
        **_label_changes(ref.layer_neurons(layer), run.layer_neurons(layer))}
  out["layers"] = layers
  out.update(_label_changes(ref.neurons, run.neurons))
  # The margins the labels had: median gap between the best and the
  # second-best concept in the float32 run.
  out["float32_median_top2_gap"] = float(np.median([
      n.similarity - n.alternatives[0][1] for n in ref.neurons]))
  return out


def run(configs, max_images, dtypes, overrides=None) -> Iterator[dict]:
  """Yields one record per (config, half-precision dtype).

  Args:
    configs: "module:arg" of configs/ (e.g. "resnet18_cifar100:smoke").
    max_images: probe images (0: all of the config's probe set).
    dtypes: the half-precision compute dtypes to compare with float32.
    overrides: config values to change in every run.
  """
  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    for spec in configs:
      t0 = time.perf_counter()
      ref = pipeline.describe_neurons(_config(spec, max_images, "float32",
                                              tmp, overrides))
      seconds = {"float32": time.perf_counter() - t0}
      for dtype in dtypes:
        t0 = time.perf_counter()
        record = {"measure": "precision", "config": spec, "dtype": dtype,
                  "num_images": ref.config["num_images"],
                  "num_concepts": ref.config["num_concepts"],
                  "similarity_fn": ref.config["similarity_fn"]}
        try:
          half = pipeline.describe_neurons(_config(spec, max_images, dtype,
                                                   tmp, overrides))
        except ValueError as e:  # E.g. float16 overflows.
          yield {**record, "error": str(e),
                 "load_avg_1min": os.getloadavg()[0]}
          continue
        seconds[dtype] = time.perf_counter() - t0
        yield {**record, **_compare(ref, half), "run_s": seconds,
               "load_avg_1min": os.getloadavg()[0]}
