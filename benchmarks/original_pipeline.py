"""describe_neurons vs the original program's pipeline in PyTorch, on a CPU.

Both sides start from the same JPEG files (the first photos of the shared
ImageNet sample), the same concepts (the first of 20k.txt) and the same
random weights: the PyTorch worker (_pipeline_torch.py) makes a torchvision
ResNet and a transformers CLIPModel and saves them; jax_dissect loads
those files (target_weights=<.safetensors>, clip_model=<directory>).

  jax_dissect: pipeline.describe_neurons(config) with an empty cache every
    pass (so every forward pass runs), one CPU device, soft_wpmi; its
    per-stage times are the ones it reports (Results.timings).
  original: the original program's shape in PyTorch float32 (see
    _pipeline_torch.py): DataLoader with worker processes, forward hooks
    averaging over space, CLIPModel image and text towers, the original's
    per-neuron soft_wpmi loop.

After one warm-up pass of each, passes alternate `repeats` times. Each
describe_neurons call builds its models anew, so jax would compile them
in every pass; with jax_compilation_cache (on in the presets) the suite
points JAX's persistent compilation cache at a temporary directory for
the run (and restores the setting after), so the timed passes load the
executables the warm-up pass compiled, as a second run of the CLI with
JAX's cache enabled would. The warm-up pass's total is recorded (first
run, compilation included). Records: one per side ({"stages_s": {stage: [per pass]},
"total_s": [...], "per_s": {stage: {"median", "best"}}}: images/s for
activations, clip_images and end to end, texts/s for clip_text), one
comparing them (jax / torch rates, median and best pass; labels equal per
layer), each with the load average.

  python scripts/benchmark.py --suite=original_pipeline --preset=cpu
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import statistics
import tempfile
import time
from typing import Any, Iterator

from benchmarks import clip as clip_bench
from benchmarks import similarity as similarity_bench
from torch_reference import worker as worker_lib

LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")

PRESETS = {
    # ResNet-50 (5 layers) and ViT-B/16-sized CLIP, 32 photos, 1000
    # concepts: every stage runs long enough to time on 2 cores.
    "small": dict(num_images=32, num_concepts=1000, target_model="resnet50",
                  layers=LAYERS, clip_model="vit-b16", batch_size=16,
                  text_batch=256, num_workers=2, repeats=3,
                  jax_compilation_cache=True),
    # The BENCHMARKS.md run: 128 photos, 3000 concepts, the same models;
    # a pass takes about a minute a side on 2 cores. Waits (up to 5 min)
    # for a 1-minute load average below 1.5 before the warm-up pass.
    "cpu": dict(num_images=128, num_concepts=3000, target_model="resnet50",
                layers=LAYERS, clip_model="vit-b16", batch_size=32,
                text_batch=256, num_workers=2, repeats=3,
                jax_compilation_cache=True, quiet_load=1.5),
    "quick": dict(num_images=8, num_concepts=30, target_model="resnet18",
                  layers=("layer3", "layer4"), clip_model="tiny",
                  batch_size=4, text_batch=16, num_workers=1, repeats=1,
                  jax_compilation_cache=True),
}

# Stages timed on both sides, and what their rate counts.
_RATES = {"activations": "images", "clip_images": "images",
          "clip_text": "texts", "end_to_end": "images"}


def _inputs(work: str, num_images: int, num_concepts: int
            ) -> tuple[str, list[str], list[str]]:
  """A folder of links to the first photos, their paths, the concepts."""
  data = clip_bench.shared_data_dir()
  sample = os.path.join(data, "imagenet_sample")
  names = sorted(os.listdir(sample))[:num_images]
  if len(names) < num_images:
    raise ValueError(f"num_images={num_images}: the shared sample {sample} "
                     f"holds {len(names)} photos")
  folder = os.path.join(work, "photos")
  os.makedirs(folder)
  for name in names:
    os.symlink(os.path.join(sample, name), os.path.join(folder, name))
  with open(os.path.join(data, "concepts", "20k.txt"), encoding="utf-8") as f:
    concepts = list(dict.fromkeys(l.strip() for l in f if l.strip()))
  return folder, [os.path.join(folder, n) for n in names], concepts[
      :num_concepts]


def _jax_config(work: str, folder: str, settings: dict, run: int):
  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
  config = pipeline.default_config()
  config.target_model = settings["target_model"]
  config.target_weights = os.path.join(work, "target.safetensors")
  config.target_layers = ",".join(settings["layers"])
  config.clip_model = os.path.join(work, "clip")
  config.d_probe = f"folder:{folder}"
  config.concept_set = os.path.join(work, "concepts.txt")
  config.similarity_fn = "soft_wpmi"
  config.batch_size = settings["batch_size"]
  config.text_batch_size = settings["text_batch"]  # The torch side's.
  config.num_threads = settings["num_workers"]
  config.sharding = "none"
  # A fresh cache every pass: every array is computed.
  config.activation_dir = os.path.join(work, f"jax_cache_{run}")
  config.result_dir = os.path.join(work, f"jax_results_{run}")
  return config


def _jax_pass(work: str, folder: str, settings: dict, concepts: list[str],
              run: int) -> dict[str, Any]:
  """One describe_neurons run; its stage times and labels, as written to
  its result directory (docs/results_format.md)."""
  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
  config = _jax_config(work, folder, settings, run)
  start = time.perf_counter()
  pipeline.describe_neurons(config)
  total = time.perf_counter() - start
  with open(os.path.join(config.result_dir, "config.json"),
            encoding="utf-8") as f:
    timings = json.load(f)["timings_s"]
  stages = {k: v for k, v in timings.items()
            if not k.startswith("similarity_")}
  stages["similarity"] = sum(v for k, v in timings.items()
                             if k.startswith("similarity_"))
  index = {c: i for i, c in enumerate(concepts)}
  labels = {layer: [] for layer in settings["layers"]}
  with open(os.path.join(config.result_dir, "descriptions.csv"),
            encoding="utf-8", newline="") as f:
    for row in csv.DictReader(f):  # In layer order, then unit order.
      labels[row["layer"]].append(index[row["description"]])
  return {"stages_s": stages, "total_s": total, "labels": labels}


def _summary(passes: list[dict], num: dict[str, int]) -> dict[str, Any]:
  stages = {k: [p["stages_s"][k] for p in passes]
            for k in passes[0]["stages_s"]}
  stages["end_to_end"] = [p["total_s"] for p in passes]
  per_s = {k: {"median": num[_RATES[k]] / statistics.median(stages[k]),
               "best": num[_RATES[k]] / min(stages[k])}
           for k in _RATES if k in stages}
  return {"stages_s": stages, "per_s": per_s}


@contextlib.contextmanager
def _compilation_cache(directory: str | None) -> Iterator[None]:
  """JAX's persistent compilation cache in `directory` (None: unchanged).

  JAX opens its cache once per process, at the first compilation, and keeps
  it: the cache is reset on entry (so `directory` is the one used) and on
  exit (so later compilations in this process do not write into a deleted
  directory, and find the restored setting).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.experimental.compilation_cache import compilation_cache  # pylint: disable=g-import-not-at-top
  if directory is None:
    yield
    return
  names = ("jax_compilation_cache_dir",
           "jax_persistent_cache_min_compile_time_secs")
  saved = {n: getattr(jax.config, n) for n in names}
  compilation_cache.reset_cache()
  jax.config.update(names[0], directory)
  jax.config.update(names[1], 0.0)
  try:
    yield
  finally:
    for n, v in saved.items():
      jax.config.update(n, v)
    compilation_cache.reset_cache()


def run(num_images: int, num_concepts: int, target_model: str,
        layers: tuple[str, ...], clip_model: str, batch_size: int,
        text_batch: int, num_workers: int, repeats: int,
        jax_compilation_cache: bool = False, quiet_load: float | None = None,
        quiet_wait_s: float = 300.0) -> Iterator[dict]:
  """Yields one record per side and one comparing them.

  quiet_load: before the warm-up pass, wait up to quiet_wait_s seconds for
  the 1-minute load average to fall below it (None: start at once).
  """
  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  if clip_model not in clip_bench.MODELS:
    raise ValueError(f"clip_model={clip_model!r}; allowed: "
                     f"{sorted(clip_bench.MODELS)}")
  with tempfile.TemporaryDirectory() as work, _compilation_cache(
      os.path.join(work, "jax_compilation_cache")
      if jax_compilation_cache else None):
    folder, photos, concepts = _inputs(work, num_images, num_concepts)
    with open(os.path.join(work, "concepts.txt"), "w",
              encoding="utf-8") as f:
      f.write("\n".join(concepts) + "\n")
    tokenizer_dir = os.path.join(work, "tokenizer")
    tokenizer = clip.build_clip_tokenizer(
        os.path.join(clip_bench.shared_data_dir(), "clip_bpe",
                     "bpe_simple_vocab_16e6.txt.gz"),
        tokenizer_dir)
    settings = {
        "photos": photos, "concepts": concepts, "target_model": target_model,
        "layers": list(layers),
        "clip_config": clip_bench.clip_config(clip_model, tokenizer),
        "tokenizer_dir": tokenizer_dir, "batch_size": batch_size,
        "text_batch": text_batch, "num_workers": num_workers, "seed": 0}
    with open(os.path.join(work, "settings.json"), "w",
              encoding="utf-8") as f:
      json.dump(settings, f)
    waited = similarity_bench.wait_for_quiet(quiet_load, quiet_wait_s)
    load_at_start = similarity_bench.load_avg()
    worker = worker_lib.TorchWorker("torch_reference.pipeline_worker",
                                    work)
    try:
      warmup = {"jax": _jax_pass(work, folder, settings, concepts, 0),
                "original_torch": worker("run")}
      passes = {"jax": [], "original_torch": []}
      loads = []
      for r in range(repeats):
        passes["jax"].append(
            _jax_pass(work, folder, settings, concepts, r + 1))
        passes["original_torch"].append(worker("run"))
        loads.append(round(os.getloadavg()[0], 2))
      info = worker("info")
    finally:
      worker.close()
  num = {"images": num_images, "texts": len(concepts)}
  common = {"num_images": num_images, "num_concepts": len(concepts),
            "target_model": target_model, "layers": list(layers),
            "clip_model": clip_model, "batch_size": batch_size,
            "num_workers": num_workers, "repeats": repeats,
            "weights": "random", "similarity_fn": "soft_wpmi",
            "jax_compilation_cache": jax_compilation_cache,
            "waited_for_quiet_s": round(waited, 1),
            "load_avg_at_start": load_at_start,
            "load_avg_1min_per_pass": loads}
  summary = {}
  for side, side_passes in passes.items():
    summary[side] = _summary(side_passes, num)
    extra = info if side == "original_torch" else {}
    yield {**common, "framework": side, **summary[side],
           "warmup_total_s": warmup[side]["total_s"], **extra,
           "load_avg": similarity_bench.load_avg()}
  labels_equal = {
      layer: sum(a == b for a, b in zip(
          passes["jax"][0]["labels"][layer],
          passes["original_torch"][0]["labels"][layer])) / len(
              passes["jax"][0]["labels"][layer])
      for layer in layers}
  yield {**common, "framework": "ratio",
         "jax_over_torch": {
             k: {"median": summary["jax"]["per_s"][k]["median"] /
                           summary["original_torch"]["per_s"][k]["median"],
                 "best": summary["jax"]["per_s"][k]["best"] /
                         summary["original_torch"]["per_s"][k]["best"]}
             for k in _RATES},
         "labels_equal": labels_equal,
         "load_avg": similarity_bench.load_avg()}
