"""The paper setting on one accelerator, from JPEG files, in one command.

  python scripts/benchmark.py --suite=accelerator --preset=full \
      --output=DIR/accelerator.jsonl
  python -m benchmarks.accelerator DIR/accelerator.jsonl > DIR/table.md

docs/accelerator.md says how to run it on a lent GPU (the wheels to carry,
the one device command), what the targets are and how to read the records.
Presets: "full" is the paper's setting (CLIP-Dissect: ResNet-50's conv1 and
layer1..layer4 on ImageNet val's 50,000 images, 20,000 concepts, ViT-B/16
CLIP), here with fc too; "tiny" is a few dozen small JPEGs, small random
models and 64 concepts (seconds on a CPU; the test runs it).

Phases, in this order; each yields its records as soon as it ends (a run
stopped by a timeout keeps what it measured). With isolate=True every phase
that computes runs in a fresh Python process of its own, so its device
memory peak is its own and a failing phase costs only its record:

  environment  versions, devices, CPUs.
  jpegs        writes `num_images` synthetic JPEG files of ImageNet-like
               sizes (short side uniform in `short_side`, aspect 1 to 1.5,
               landscape 3 in 4, smooth random colour fields with pixel
               noise, quality `quality`) with one process per CPU.
  machine      the device's measured matrix-product rate in bfloat16 and
               float32 (XLA's default precision), its copy bandwidth, and
               XLA's FLOP count (cost analysis) of one image through the
               target and CLIP's image tower and one concept through CLIP's
               text tower (at the concepts' mean token count).
  decode       images/s of JPEG decoding and preprocessing alone on every
               CPU thread (jax_dissect.data.loader), for the target's and
               CLIP's transforms: the decode floor of each image stage.
  describe     pipeline.describe_neurons end to end from the files, once
               per compute dtype (random target and CLIP weights; a fresh
               cache, so every array is computed): seconds of the call, the
               run's per-stage records (config.json "stages": seconds,
               images/s, input waits), device memory, host memory.
  floors       per stage of each describe run: its decode floor (images /
               decode rate), its compute floor (FLOPs / measured rate; for
               the similarity kernels a memory floor, bytes of P and of the
               gathered rows of Q / copy bandwidth), the larger one (which
               binds) and seconds / floor.
  labels       the share of labels that changed between the first dtype
               and float32, per layer (benchmarks/precision.py's measure).
  kernels      similarity.compute of each kernel at `kernel_shape` (N, M,
               K) on random A and P made on the device: the first call
               (compilation included) and a second, timed call
               ("rank_reorder:64": on the first 64 neurons only).
  pvalues      analyses.scoring.label_pvalues (B = num_permutations) of
               `analysis_layer` of the float32 run.
  linear       analyses.linear_explanations of `analysis_layer`.
  sae          features.train_sae on `analysis_layer`'s activations.
  torch        the same towers in PyTorch on the same device, from the same
               files (torch_reference/accelerator_towers.py), per dtype;
               skipped where torch or torchvision is missing.
  targets      the issue's targets: the bfloat16 run in at most 60 s end to
               end, every stage with a floor within 2x of it, the share of
               labels bfloat16 changed, the whole suite's seconds.

Phases after the describe runs start only while the suite has run for less
than `budget_s` seconds; a phase it skips yields {"measure": "skipped"}.
The phases' functions are in benchmarks/_accelerator_phases.py, the table
in benchmarks/_accelerator_table.py.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Iterator, Sequence

from benchmarks import _accelerator_phases as phases
from benchmarks import _accelerator_table

PAPER_LAYERS = ("conv1", "layer1", "layer2", "layer3", "layer4")
SKIPPABLE = ("machine", "decode", "kernels", "pvalues", "linear", "sae",
             "torch")

PRESETS = {
    "full": dict(
        num_images=50000, num_concepts=20000, short_side=(256, 500),
        quality=90, target_model="resnet50",
        layers=PAPER_LAYERS + ("fc",), clip="vit-b16", batch_size=256,
        dtypes=("bfloat16", "float32"), devices="auto",
        decode_images=10000, machine_size=8192,
        kernel_shape=(50000, 20000, 2048),
        kernels=("soft_wpmi", "wpmi", "cos_similarity",
                 "cos_similarity_cubed", "rank_reorder:64"),
        analysis_layer="layer4", num_permutations=100, linear_neurons=0,
        sae_features=16384, sae_k=32, sae_batch=4096, sae_steps=200,
        torch_images=10000, torch_text_batch=1024, isolate=True,
        budget_s=390),
    "tiny": dict(
        num_images=24, num_concepts=64, short_side=(40, 72), quality=90,
        target_model="resnet18_cifar100", layers=("conv1", "layer4", "fc"),
        clip="tiny", batch_size=8, dtypes=("bfloat16", "float32"),
        devices=1, decode_images=24, machine_size=256,
        kernel_shape=(256, 64, 32),
        kernels=("soft_wpmi", "cos_similarity:8"),
        analysis_layer="layer4", num_permutations=10, linear_neurons=8,
        sae_features=64, sae_k=4, sae_batch=32, sae_steps=3,
        torch_images=8, torch_text_batch=32, isolate=False, budget_s=600),
}

# ----------------------------------------------------------------------------
# Floors and targets.
# ----------------------------------------------------------------------------


def stage_floors(run: dict, mach: dict, rates: dict) -> dict[str, Any]:
  """Each stage's floor (module doc, "floors") and its seconds / floor.

  Args:
    run: a describe record (stages, num_images, num_concepts, neurons,
      top_k, dtype).
    mach: the machine record.
    rates: the decode record's {"target": images/s, "clip": images/s}.

  Returns:
    {stage: {"seconds", "decode_floor_s", "compute_floor_s",
    "memory_floor_s", "floor_s", "binds", "ratio"}}; stages without a floor
    (loading, scanning, P's product and caching) have floor_s None.
  """
  n, m = run["num_images"], run["num_concepts"]
  flop_rate = mach["matmul_flops_per_s"].get(
      run["dtype"], mach["matmul_flops_per_s"]["bfloat16"])
  per_image = mach.get("flops_per_image") or {}

  def compute(flops, count):
    return flops * count / flop_rate if flops else None

  out = {}
  for stage, rec in run["stages"].items():
    floors = {"decode_floor_s": None, "compute_floor_s": None,
              "memory_floor_s": None}
    if stage == "activations":
      floors.update(decode_floor_s=n / rates["target"],
                    compute_floor_s=compute(per_image.get("target"), n))
    elif stage == "clip_images":
      floors.update(decode_floor_s=n / rates["clip"],
                    compute_floor_s=compute(per_image.get("clip_image"), n))
    elif stage == "clip_text":
      floors["compute_floor_s"] = compute(mach.get("flops_per_text"), m)
    elif stage.startswith("similarity_") and run.get("top_k"):
      k = run["neurons"].get(stage[len("similarity_"):], 0)
      top_k = min(run["top_k"], n)
      # Read P once and the top_k rows of Q of every neuron.
      floors["memory_floor_s"] = 4.0 * (n * m + k * top_k * m) / mach[
          "copy_bytes_per_s"]
    named = {kind[:-len("_floor_s")]: v for kind, v in floors.items() if v}
    binds = max(named, key=named.get) if named else None
    floor = named[binds] if binds else None
    out[stage] = {"seconds": rec["seconds"], **floors, "floor_s": floor,
                  "binds": binds,
                  "ratio": rec["seconds"] / floor if floor else None}
  return out


def targets(describes: dict[str, dict], floors: dict[str, dict],
            labels: dict | None, suite_s: float) -> dict[str, Any]:
  """The issue's targets, each with its value and whether it is met."""
  out = {"suite_s": suite_s, "suite_under_8_min": suite_s <= 480}
  if "bfloat16" in describes:
    e2e = describes["bfloat16"]["describe_s"]
    out.update(bfloat16_end_to_end_s=e2e,
               bfloat16_end_to_end_le_60s=e2e <= 60.0)
  for dtype, stages in floors.items():
    ratios = {s: r["ratio"] for s, r in stages.items() if r["ratio"]}
    out[f"{dtype}_stages_over_2x_floor"] = sorted(
        s for s, r in ratios.items() if r > 2.0)
    out[f"{dtype}_worst_stage_ratio"] = max(ratios.values()) if ratios else None
  if labels is not None:
    out["labels_changed_vs_float32"] = labels["labels_changed"]
  return out


# ----------------------------------------------------------------------------
# The suite.
# ----------------------------------------------------------------------------


def _write_concepts(path: str, num: int) -> list[str]:
  from configs import shared_data  # pylint: disable=g-import-not-at-top
  with open(shared_data.path("concepts", "20k.txt"), encoding="utf-8") as f:
    concepts = list(dict.fromkeys(l.strip() for l in f if l.strip()))[:num]
  with open(path, "w", encoding="utf-8") as f:
    f.write("\n".join(concepts) + "\n")
  return concepts


def _check_allocator(isolate: bool) -> None:
  """On an accelerator the phases' processes need the memory this one
  would hold if JAX preallocated it."""
  import jax  # pylint: disable=g-import-not-at-top
  if (isolate and jax.default_backend() != "cpu" and
      os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "").lower() != "false"):
    raise ValueError(
        "the accelerator suite runs its phases in processes of their own: "
        "export XLA_PYTHON_CLIENT_PREALLOCATE=false before starting it, so "
        "this process does not hold 75% of the device's memory")


def run(num_images: int, num_concepts: int, short_side: Sequence[int],
        quality: int, target_model: str, layers: Sequence[str], clip: str,
        batch_size: int, dtypes: Sequence[str], devices: Any,
        decode_images: int, machine_size: int, kernel_shape: Sequence[int],
        kernels: Sequence[str], analysis_layer: str, num_permutations: int,
        linear_neurons: int, sae_features: int, sae_k: int, sae_batch: int,
        sae_steps: int, torch_images: int, torch_text_batch: int,
        isolate: bool, budget_s: float, skip: Sequence[str] = (),
        work_dir: str = "", keep_work: bool = False) -> Iterator[dict]:
  """Yields the records of the phases in the module doc.

  Args:
    num_images: JPEG files written and described (N).
    num_concepts: the first M concepts of the shared 20k.txt.
    short_side: (low, high) pixels of the images' short side.
    quality: JPEG quality.
    target_model: a registry name (resnet50, resnet18, resnet18_cifar100).
    layers: the target's layers to describe.
    clip: a CLIP_CONFIGS name ("vit-b16": ViT-B/16 sizes, or "tiny").
    batch_size: images (texts) per device per forward call.
    dtypes: compute dtypes of the describe runs; must include float32.
    devices: "auto" (every local device) or a count.
    decode_images: files the decode-only rates are measured on.
    machine_size: side of the square matrix products of the rate.
    kernel_shape: (N, M, K) of the kernels phase.
    kernels: kernel names, "name:K" for fewer neurons.
    analysis_layer: the layer of the pvalues, linear and sae phases.
    num_permutations: B of the p-values.
    linear_neurons: neurons explained (0: all of the layer's).
    sae_features, sae_k, sae_batch, sae_steps: the SAE's F, k, batch rows
      and training steps.
    torch_images: files of the PyTorch side (its first ones).
    torch_text_batch: concepts per PyTorch text batch.
    isolate: run each phase in a fresh process (on an accelerator, needs
      XLA_PYTHON_CLIENT_PREALLOCATE=false in this process's environment).
    budget_s: no phase after the describe runs starts later than this.
    skip: phases to leave out (SKIPPABLE; without machine or decode there
      are no floors).
    work_dir: where the JPEGs, caches and results go; by default a new
      temporary directory, removed at the end unless keep_work.
    keep_work: keep the default temporary directory.

  Raises:
    ValueError: a bad clip, target_model, dtypes or skip (before any work).
  """
  if clip not in phases.CLIP_CONFIGS:
    raise ValueError(f"clip={clip!r}; allowed: {sorted(phases.CLIP_CONFIGS)}")
  if target_model not in phases.TORCH_TARGETS:
    raise ValueError(f"target_model={target_model!r}; allowed: "
                     f"{sorted(phases.TORCH_TARGETS)}")
  if "float32" not in dtypes:
    raise ValueError(f"dtypes={list(dtypes)} must include float32 (the "
                     "reference of the label comparison)")
  unknown = sorted(set(skip) - set(SKIPPABLE))
  if unknown:
    raise ValueError(f"skip={list(skip)}: unknown phase(s) {unknown}; "
                     f"allowed: {', '.join(SKIPPABLE)}")
  _check_allocator(isolate)
  from configs import shared_data  # pylint: disable=g-import-not-at-top
  from jax_dissect import clip as clip_lib  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  elapsed = lambda: time.perf_counter() - start
  work = work_dir or tempfile.mkdtemp(prefix="jax_dissect_accel_")
  os.makedirs(work, exist_ok=True)
  clip_config = phases.CLIP_CONFIGS[clip]
  settings = dict(num_images=num_images, num_concepts=num_concepts,
                  target_model=target_model, layers=list(layers), clip=clip,
                  batch_size=batch_size, dtypes=list(dtypes),
                  torch_images=torch_images,
                  torch_text_batch=torch_text_batch)
  try:
    yield {"measure": "environment", **phases.call("environment", {}, isolate),
           "settings": settings}
    folder = os.path.join(work, "jpegs")
    concepts_file = os.path.join(work, "concepts.txt")
    concepts = _write_concepts(concepts_file, num_concepts)
    tokenizer_dir = os.path.join(work, "tokenizer")
    clip_lib.build_clip_tokenizer(
        shared_data.path("clip_bpe", "bpe_simple_vocab_16e6.txt.gz"),
        tokenizer_dir)
    # Always its own process: it forks its workers.
    yield {"measure": "jpegs", **phases.call("write_jpegs", dict(
        folder=folder, num_images=num_images, short_side=list(short_side),
        quality=quality), True), "short_side": list(short_side),
           "quality": quality}

    mach = rates = None
    if "machine" not in skip:
      try:
        mach = phases.call("machine", dict(
            size=machine_size, target_model=target_model,
            clip_config=clip_config, tokenizer_dir=tokenizer_dir,
            concepts_file=concepts_file), isolate)
        yield {"measure": "machine", **mach}
      except phases.PhaseError as e:
        yield {"measure": "machine", "error": str(e)}
    if "decode" not in skip:
      try:
        rates = phases.call("decode", dict(
            folder=folder, num_images=decode_images,
            target_model=target_model,
            clip_image_size=int(clip_config.get("vision_config", {}).get(
                "image_size", 224)),
            batch_size=batch_size), isolate)
        yield {"measure": "decode", **rates}
      except phases.PhaseError as e:
        yield {"measure": "decode", "error": str(e)}

    describes, result_dirs = {}, {}
    for dtype in dtypes:
      result_dirs[dtype] = os.path.join(work, f"results_{dtype}")
      try:
        describes[dtype] = phases.call("describe", dict(
            folder=folder, concepts_file=concepts_file,
            tokenizer_dir=tokenizer_dir, clip_config=clip_config,
            target_model=target_model, layers=list(layers), dtype=dtype,
            batch_size=batch_size, devices=devices,
            result_dir=result_dirs[dtype],
            activation_dir=os.path.join(work, f"cache_{dtype}")), isolate)
        yield {"measure": "describe", **describes[dtype]}
      except phases.PhaseError as e:
        yield {"measure": "describe", "dtype": dtype, "error": str(e)}

    floors = {}
    if mach and rates:
      for dtype, rec in describes.items():
        floors[dtype] = stage_floors(rec, mach, rates["rates"])
        yield {"measure": "floors", "dtype": dtype, "stages": floors[dtype],
               "describe_s": rec["describe_s"],
               "floor_total_s": sum(s["floor_s"] or 0.0
                                    for s in floors[dtype].values())}
    labels = None
    half = [d for d in describes if d != "float32"]
    if half and "float32" in describes:
      labels = phases.compare_labels(result_dirs["float32"], result_dirs[half[0]])
      yield {"measure": "labels", "reference": "float32", "dtype": half[0],
             **labels}

    analysis_dir = result_dirs["float32"]
    optional = [
        ("kernels", "kernels", lambda left: dict(
            shape=list(kernel_shape), names=list(kernels), devices=devices,
            time_left_s=left)),
        ("pvalues", "pvalues", lambda left: dict(
            result_dir=analysis_dir, layer=analysis_layer,
            num_permutations=num_permutations)),
        ("linear", "linear", lambda left: dict(
            result_dir=analysis_dir, layer=analysis_layer,
            max_neurons=linear_neurons)),
        ("sae", "sae", lambda left: dict(
            result_dir=analysis_dir, layer=analysis_layer,
            num_features=sae_features, k=sae_k, batch_size=sae_batch,
            steps=sae_steps, devices=devices)),
    ]
    for phase, fn, kwargs in optional:
      if phase in skip:
        continue
      left = budget_s - elapsed()
      if left <= 0:
        yield {"measure": "skipped", "phase": phase,
               "reason": f"time budget ({budget_s} s) spent"}
        continue
      if phase != "kernels" and "float32" not in describes:
        yield {"measure": "skipped", "phase": phase,
               "reason": "no float32 describe run"}
        continue
      try:
        yield {"measure": phase, **phases.call(fn, kwargs(left), isolate,
                                        timeout=left + 120)}
      except phases.PhaseError as e:
        yield {"measure": phase, "error": str(e)}
    if "torch" not in skip:
      left = budget_s - elapsed()
      if left <= 0:
        yield {"measure": "skipped", "phase": "torch",
               "reason": f"time budget ({budget_s} s) spent"}
      elif not all(importlib.util.find_spec(m) for m in ("torch",
                                                         "torchvision")):
        yield {"measure": "skipped", "phase": "torch",
               "reason": "torch or torchvision is not installed"}
      else:
        try:
          out = phases.torch_towers(work, folder, concepts, tokenizer_dir,
                              settings, left)
          passes = out.pop("passes")
          for p in passes:
            yield {"measure": "torch", **out, **p}
          if not passes:
            yield {"measure": "skipped", "phase": "torch",
                   "reason": "time budget spent"}
        except (phases.PhaseError, OSError, ValueError) as e:
          yield {"measure": "torch", "error": str(e)[:300]}
    yield {"measure": "targets", "targets": targets(describes, floors,
                                                    labels, elapsed())}
  finally:
    if not keep_work and not work_dir:
      shutil.rmtree(work, ignore_errors=True)




if __name__ == "__main__":
  if len(sys.argv) != 2:
    sys.exit("usage: python -m benchmarks.accelerator RECORDS.jsonl")
  sys.stdout.write(_accelerator_table.table(
      _accelerator_table.read_records(sys.argv[1])))
