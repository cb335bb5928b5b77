"""Forward passes on 1, 2, 4, 8 devices, and from files vs decoded arrays.

1. For each device count, a subprocess with that many host devices
   (XLA_FLAGS=--xla_force_host_platform_device_count=n; on an accelerator
   host, the first n real devices) times each forward stage on
   pre-decoded arrays: the target's activations (the smoke ResNet-18 and
   ResNet-50), CLIP's image tower and CLIP's text tower (the smoke configs'
   small random CLIP). Every call takes `batch_size` inputs over the n
   devices (a batch of batch_size / n per device), so the work per call is
   the same at every n. On one CPU, host devices share the same cores:
   these rates show the overhead of spreading a call over devices, not a
   speed-up.
2. In one process (all devices), each image stage from files (JPEG decoding
   and resizing in jax_dissect.data.loader's thread pool, prefetching) against
   the same stage on arrays decoded beforehand: whether the devices wait
   for input.

Every record carries the 1-minute load average when it was taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Iterator

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MODEL_NAMES = {"clip_images": "smoke CLIP (random, width 64, 64 px)",
                "resnet18_cifar100": "resnet18_cifar100 (32 px)",
                "resnet50": "resnet50 (224 px)"}

PRESETS = {
    "full": dict(device_counts=(1, 2, 4, 8), batch_size=64,
                 images={"resnet18_cifar100": 512, "resnet50": 64,
                         "clip_images": 512},
                 texts=1024, repeats=3),
    "quick": dict(device_counts=(1, 2), batch_size=8,
                  images={"resnet18_cifar100": 16, "clip_images": 16},
                  texts=16, repeats=1),
}


def _sample() -> str:
  from configs import shared_data  # pylint: disable=g-import-not-at-top
  return shared_data.path("imagenet_sample")


def _embedder(devices):
  import tempfile  # pylint: disable=g-import-not-at-top

  from configs import common  # pylint: disable=g-import-not-at-top
  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  return clip.load_embedder(
      "random", tokenizer=common.CLIP_BPE,
      config_overrides=common.small_clip_config(),
      work_dir=os.path.join(tempfile.gettempdir(), "jax_dissect_bench"),
      devices=devices)


def _target(name):
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  spec, module, variables = models.load_target(name, "random")
  return spec, module, variables


def _probe(n: int):
  from jax_dissect.data import probes as data_lib  # pylint: disable=g-import-not-at-top
  probe = data_lib.ImageFolder(_sample())
  return data_lib.Subset(probe, range(min(n, len(probe))))


def _best_rate(fn, n: int, repeats: int) -> float:
  """Images per second of the fastest of `repeats` timed calls (after one
  call that compiles)."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return n / best


def _decoded(probe, transform) -> np.ndarray:
  return np.stack([transform(probe.load(i)) for i in range(len(probe))])


def _stage_fns(name: str, n: int, batch_size: int, devices, from_files: bool):
  """(function running the stage once, images per call) for one stage."""
  from jax_dissect.data import loader  # pylint: disable=g-import-not-at-top
  from jax_dissect.models import capture as activations  # pylint: disable=g-import-not-at-top
  probe = _probe(n)
  if name == "clip_images":
    embedder = _embedder(devices)
    transform = embedder.transform
    run = lambda batches: embedder.embed_batches(batches, batch_size)
  else:
    spec, module, variables = _target(name)
    transform = spec.transform
    layers = ["conv1", "layer1", "layer2", "layer3", "layer4"]
    run = lambda batches: activations.collect_activations(
        module, variables, batches, layers, batch_size=batch_size,
        devices=devices)
  if from_files:
    return lambda: run(loader.batches(probe, 0, len(probe), batch_size,
                                      transform)), len(probe)
  x = _decoded(probe, transform)
  return lambda: run(x[i:i + batch_size]
                     for i in range(0, len(x), batch_size)), len(probe)


def measure_devices(images: dict, texts: int, batch_size: int,
                    repeats: int) -> list[dict]:
  """Rates of every forward stage on all local devices, pre-decoded input
  (run in a subprocess per device count)."""
  import jax  # pylint: disable=g-import-not-at-top
  devices = len(jax.local_devices())
  # Inputs per device per call: batch_size per call over all devices.
  batch_size = max(1, batch_size // devices)
  out = []
  for name, n in images.items():
    fn, count = _stage_fns(name, n, batch_size, "auto", from_files=False)
    out.append({"stage": "activations" if name != "clip_images" else name,
                "model": _MODEL_NAMES.get(name, name), "images": count,
                "images_per_s": _best_rate(fn, count, repeats)})
  from configs import common  # pylint: disable=g-import-not-at-top
  with open(common.concepts("20k.txt"), encoding="utf-8") as f:
    concepts = [line.strip() for line in f if line.strip()][:texts]
  embedder = _embedder("auto")
  rate = _best_rate(lambda: embedder.embed_texts(concepts, batch_size),
                    len(concepts), repeats)
  out.append({"stage": "clip_text", "model": _MODEL_NAMES["clip_images"],
              "texts": len(concepts), "texts_per_s": rate})
  for record in out:
    record.update(devices=devices, batch_per_device=batch_size,
                  load_avg_1min=os.getloadavg()[0])
  return out


def _child(device_count: int, images: dict, texts: int, batch_size: int,
           repeats: int) -> list[dict]:
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if "host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join(
      flags + [f"--xla_force_host_platform_device_count={device_count}"])
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO, env.get("PYTHONPATH")) if p)
  code = ("import json, sys; from benchmarks import scale; "
          "print(json.dumps(scale.measure_devices(*json.loads(sys.argv[1]))))")
  done = subprocess.run(
      [sys.executable, "-c", code,
       json.dumps([images, texts, batch_size, repeats])],
      cwd=REPO, env=env, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError(f"{device_count}-device run failed: "
                       f"{done.stderr[-2000:]}")
  return json.loads(done.stdout.strip().splitlines()[-1])


def run(device_counts, batch_size, images, texts, repeats) -> Iterator[dict]:
  """Yields per-device-count rates, then files vs decoded arrays."""
  for count in device_counts:
    for record in _child(count, images, texts, batch_size, repeats):
      yield {"measure": "devices", "host_devices": count, **record,
             "note": "host devices share the same CPU cores: overhead, "
                     "not speed-up"}
  for name, n in images.items():
    rates = {}
    for source in ("files", "decoded"):
      fn, count = _stage_fns(name, n, batch_size, "auto",
                             from_files=source == "files")
      rates[source] = _best_rate(fn, count, repeats)
    from jax_dissect.data import loader  # pylint: disable=g-import-not-at-top
    yield {"measure": "input", "model": _MODEL_NAMES.get(name, name),
           "images": count,
           "images_per_s_from_files": rates["files"],
           "images_per_s_decoded": rates["decoded"],
           "files_over_decoded": rates["files"] / rates["decoded"],
           "decode_threads": loader.default_threads(),
           "prefetch_batches": loader.DEFAULT_PREFETCH,
           "load_avg_1min": os.getloadavg()[0]}
