"""The accelerator suite's phases (benchmarks/accelerator.py): each a
function of JSON-able arguments returning a JSON-able dict, so that `call`
can run it in this process or in a fresh Python process of its own (its
device memory peak its own; a crash costs only its record).
"""

from __future__ import annotations

import importlib.util
import io
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Sequence

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# CLIPConfig's defaults are ViT-B/32's image tower (width 768, 12 layers,
# 224 px) and the 12-layer, width-512 text tower; ViT-B/16 differs only in
# its patch size.
CLIP_CONFIGS = {
    "vit-b16": {"projection_dim": 512, "vision_config": {"patch_size": 16}},
    "tiny": {"projection_dim": 16,
             "vision_config": {"hidden_size": 32, "intermediate_size": 64,
                               "num_hidden_layers": 1,
                               "num_attention_heads": 2, "image_size": 32,
                               "patch_size": 16},
             "text_config": {"hidden_size": 32, "intermediate_size": 64,
                             "num_hidden_layers": 1,
                             "num_attention_heads": 2}},
}
# The target models' torchvision names (the PyTorch side).
TORCH_TARGETS = {"resnet50": "resnet50", "resnet18": "resnet18",
                 "resnet18_cifar100": "resnet18"}

# ----------------------------------------------------------------------------
# Running a phase: in this process, or in a fresh one.
# ----------------------------------------------------------------------------

_CHILD = ("import json, sys\n"
          "from absl import logging\n"
          "logging.set_verbosity(logging.INFO)\n"
          "from benchmarks import _accelerator_phases as m\n"
          "out = getattr(m, sys.argv[1])(**json.loads(sys.argv[2]))\n"
          "with open(sys.argv[3], 'w', encoding='utf-8') as f:\n"
          "  json.dump(out, f)\n")


class PhaseError(RuntimeError):
  """A phase failed; its message is one line for the record."""


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
  """The environment of a phase's process: this repository first on the
  path, and JAX allocating device memory as it needs it (so a process's
  peak is its own, and the processes after it find the memory free)."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO, env.get("PYTHONPATH")) if p)
  env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  env.update(extra or {})
  return env


def _run_process(args: list[str], env: dict[str, str],
                 timeout: float | None) -> None:
  """Runs a process, echoing its stderr; PhaseError with its last lines if
  it fails or outlives `timeout`."""
  proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, errors="replace")
  tail: list[str] = []

  def pump():
    for line in proc.stderr:
      sys.stderr.write(line)
      tail.append(line.rstrip())
      del tail[:-20]

  thread = threading.Thread(target=pump, daemon=True)
  thread.start()
  try:
    proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    thread.join(timeout=5)
    raise PhaseError(f"timed out after {timeout:.0f} s") from None
  thread.join(timeout=5)
  if proc.returncode:
    # The exception's line (the last one printed); the log has the rest.
    last = ([l.strip() for l in tail if l.strip()] or ["no output"])[-1]
    raise PhaseError(f"exited with {proc.returncode}: {last}"[:300])


def call(fn: str, kwargs: dict[str, Any], isolate: bool,
         timeout: float | None = None) -> dict[str, Any]:
  """Runs this module's function `fn(**kwargs)`; its JSON-able result.

  With isolate, in a fresh Python process (child_env), whose seconds from
  start to exit are added as "process_s".
  """
  if not isolate:
    try:
      return json.loads(json.dumps(globals()[fn](**kwargs)))
    except Exception as e:  # pylint: disable=broad-except
      raise PhaseError(f"{type(e).__name__}: {e}"[:300]) from e
  with tempfile.TemporaryDirectory(prefix="accel_phase_") as tmp:
    path = os.path.join(tmp, "out.json")
    start = time.perf_counter()
    _run_process([sys.executable, "-c", _CHILD, fn, json.dumps(kwargs), path],
                 child_env(), timeout)
    with open(path, encoding="utf-8") as f:
      out = json.load(f)
  out["process_s"] = time.perf_counter() - start
  return out


def _device_memory() -> dict[str, int] | None:
  """The first local device's allocator figures (None on a CPU)."""
  import jax  # pylint: disable=g-import-not-at-top
  stats = jax.local_devices()[0].memory_stats()
  if not stats:
    return None
  return {k: int(stats[k]) for k in ("peak_bytes_in_use", "bytes_in_use",
                                     "bytes_limit") if k in stats}


def _peak_rss_mb() -> float:
  return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _devices_arg(devices: Any) -> Any:
  """The preset's devices ("auto" or a count) as similarity.compute's."""
  return None if devices == "auto" else int(devices)


# ----------------------------------------------------------------------------
# Phases (module functions, so that a fresh process can run them).
# ----------------------------------------------------------------------------


def environment() -> dict[str, Any]:
  """Versions, devices and CPUs of the machine."""
  import jax  # pylint: disable=g-import-not-at-top
  versions = {}
  for name in ("jax", "jaxlib", "flax", "optax", "numpy", "PIL",
               "transformers", "tokenizers", "huggingface_hub",
               "ml_collections", "torch", "torchvision"):
    if importlib.util.find_spec(name) is None:
      versions[name] = None
      continue
    try:
      from importlib import metadata  # pylint: disable=g-import-not-at-top
      dist = {"PIL": "pillow", "huggingface_hub": "huggingface-hub",
              "ml_collections": "ml-collections"}.get(name, name)
      versions[name] = metadata.version(dist)
    except Exception:  # pylint: disable=broad-except
      versions[name] = "unknown"
  dev = jax.local_devices()[0]
  return {"python": platform.python_version(), "versions": versions,
          "platform": dev.platform, "device_kind": dev.device_kind,
          "local_devices": len(jax.local_devices()),
          "cpu_count": os.cpu_count(),
          "xla_python_client_preallocate": os.environ.get(
              "XLA_PYTHON_CLIENT_PREALLOCATE")}


def _jpeg(args: tuple) -> tuple[int, int]:
  """Writes image `i`; (bytes, pixels)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  folder, i, low, high, quality, seed = args
  rng = np.random.default_rng([seed, i])
  short = int(rng.integers(low, high + 1))
  long_side = min(int(round(short * rng.uniform(1.0, 1.5))), max(high, short))
  w, h = (long_side, short) if rng.random() < 0.75 else (short, long_side)
  grid = int(rng.integers(4, 24))
  field = rng.integers(0, 256, (grid, grid, 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(field).resize((w, h), Image.BICUBIC),
                      np.int16)
  noisy = smooth + rng.integers(-28, 29, (h, w, 3), dtype=np.int16)
  buf = io.BytesIO()
  Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
      buf, "JPEG", quality=quality)
  sub = os.path.join(folder, f"{i // 1000:03d}")
  os.makedirs(sub, exist_ok=True)
  with open(os.path.join(sub, f"{i:06d}.jpg"), "wb") as f:
    f.write(buf.getvalue())
  return buf.tell(), w * h


def write_jpegs(folder: str, num_images: int, short_side: Sequence[int],
                quality: int, processes: int = 0, seed: int = 0
                ) -> dict[str, Any]:
  """Writes num_images JPEG files under folder/NNN/ (1000 per folder).

  Call it in a process that has not started JAX (it forks workers).

  Returns:
    {"images", "seconds", "images_per_s", "processes", "mean_bytes",
    "mean_pixels", "total_bytes"}.
  """
  processes = processes or os.cpu_count() or 1
  tasks = [(folder, i, int(short_side[0]), int(short_side[1]), quality, seed)
           for i in range(num_images)]
  start = time.perf_counter()
  if processes == 1:
    sizes = [_jpeg(t) for t in tasks]
  else:
    with multiprocessing.get_context("fork").Pool(processes) as pool:
      sizes = pool.map(_jpeg, tasks, chunksize=64)
  seconds = time.perf_counter() - start
  size = np.asarray(sizes, np.float64)
  return {"images": num_images, "seconds": seconds,
          "images_per_s": num_images / seconds, "processes": processes,
          "mean_bytes": float(size[:, 0].mean()),
          "mean_pixels": float(size[:, 1].mean()),
          "total_bytes": int(size[:, 0].sum())}


def _flops(lowered) -> float | None:
  """XLA's FLOP count of a lowered computation (None if not reported)."""
  cost = lowered.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def _rate(fn, work: float, repeats: int) -> float:
  """work / seconds of the fastest of `repeats` calls after one warm-up."""
  fn().block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn().block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return work / best


def machine(size: int, target_model: str, clip_config: dict,
            tokenizer_dir: str, concepts_file: str,
            repeats: int = 5) -> dict[str, Any]:
  """The device's measured rates and the models' FLOPs (module doc)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  dev = jax.local_devices()[0]
  out = {"device_kind": dev.device_kind, "platform": dev.platform,
         "matmul_size": size, "matmul_flops_per_s": {}}
  matmul = jax.jit(lambda a, b: a @ b)
  for name in ("bfloat16", "float32"):
    x = jax.random.normal(jax.random.key(0), (size, size), jnp.dtype(name))
    out["matmul_flops_per_s"][name] = _rate(lambda x=x: matmul(x, x),
                                            2.0 * size**3, repeats)
  # Read and write of a (size, size, 4)-float32 array per call.
  x = jnp.ones((size * size * 4,), jnp.float32)
  add = jax.jit(lambda a: a + 1.0)
  out["copy_bytes_per_s"] = _rate(lambda x=x: add(x), 2.0 * x.nbytes,
                                  repeats)

  spec = models.get_model(target_model)
  module = spec.build()
  s = spec.input_size
  out["flops_per_image"] = {"target": _flops(
      jax.jit(lambda v, x: module.apply(v, x)).lower(
          spec.abstract_variables(),
          jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)))}
  embedder = clip.load_embedder("random", tokenizer=tokenizer_dir,
                                config_overrides=clip_config, devices=1)
  s = embedder.image_size
  out["flops_per_image"]["clip_image"] = _flops(
      jax.jit(lambda p, x: embedder.model.get_image_features(
          jnp.transpose(x, (0, 3, 1, 2)), params=p)).lower(
              embedder.params,
              jax.ShapeDtypeStruct((1, s, s, 3), jnp.float32)))
  with open(concepts_file, encoding="utf-8") as f:
    concepts = [l.strip() for l in f if l.strip()]
  ids, _ = embedder.tokenize(concepts)
  tokens = max(2, int(round(float(np.mean([len(i) for i in ids])))))
  ids_struct = jax.ShapeDtypeStruct((1, tokens), jnp.int32)
  out["text_tokens_mean"] = float(np.mean([len(i) for i in ids]))
  out["flops_per_text"] = _flops(
      jax.jit(lambda p, i, m: embedder.model.get_text_features(
          i, attention_mask=m, params=p)).lower(
              embedder.params, ids_struct, ids_struct))
  out["device_memory"] = _device_memory()
  return out


def decode(folder: str, num_images: int, target_model: str,
           clip_image_size: int, batch_size: int) -> dict[str, Any]:
  """Images/s of decoding + preprocessing alone, every CPU thread."""
  from jax_dissect import clip  # pylint: disable=g-import-not-at-top
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  from jax_dissect.data import loader  # pylint: disable=g-import-not-at-top
  from jax_dissect.data import probes  # pylint: disable=g-import-not-at-top
  probe = probes.ImageFolder(folder)
  probe = probes.Subset(probe, range(min(num_images, len(probe))))
  threads = loader.default_threads()
  out = {"images": len(probe), "threads": threads, "rates": {}}
  for name, transform in (
      ("target", models.get_model(target_model).transform),
      ("clip", clip.clip_transform(clip_image_size))):
    start = time.perf_counter()
    for _ in loader.batches(probe, 0, len(probe), batch_size, transform,
                            num_threads=threads, prefetch=max(2, threads)):
      pass
    out["rates"][name] = len(probe) / (time.perf_counter() - start)
  return out


def describe(folder: str, concepts_file: str, tokenizer_dir: str,
             clip_config: dict, target_model: str, layers: Sequence[str],
             dtype: str, batch_size: int, devices: Any, result_dir: str,
             activation_dir: str) -> dict[str, Any]:
  """describe_neurons end to end from the files; its stage records."""
  from jax_dissect import pipeline  # pylint: disable=g-import-not-at-top
  c = pipeline.default_config()
  c.target_model = target_model
  c.target_weights = "random"
  c.target_layers = ",".join(layers)
  c.clip_model = "random"
  c.clip_tokenizer = tokenizer_dir
  c.clip_config = clip_config
  c.d_probe = f"folder:{folder}"
  c.concept_set = concepts_file
  c.similarity_fn = "soft_wpmi"
  c.batch_size = batch_size
  c.devices = devices
  c.compute_dtype = dtype
  c.result_dir = result_dir
  c.activation_dir = activation_dir
  start = time.perf_counter()
  run = pipeline.describe_neurons(c)
  seconds = time.perf_counter() - start
  widths = {layer: len(run.layer_neurons(layer)) for layer in layers}
  return {"dtype": dtype, "describe_s": seconds,
          "stages": run.config["stages"],
          "num_images": run.config["num_images"],
          "num_concepts": run.config["num_concepts"],
          "neurons": widths, "top_k": run.config["similarity_kwargs"].get(
              "top_k"),
          "device_list": run.config["device_list"],
          "device_memory": _device_memory(), "peak_rss_mb": _peak_rss_mb()}


def compare_labels(reference_dir: str, other_dir: str) -> dict[str, Any]:
  """Share of labels that differ between two runs, per layer and in all."""
  from benchmarks import precision  # pylint: disable=g-import-not-at-top
  from jax_dissect.store import results as results_lib  # pylint: disable=g-import-not-at-top
  ref = results_lib.load_run(reference_dir)
  other = results_lib.load_run(other_dir)
  changes = precision._label_changes  # pylint: disable=protected-access
  return {"layers": {layer: changes(ref.layer_neurons(layer),
                                    other.layer_neurons(layer))
                     for layer in ref.layers},
          **changes(ref.neurons, other.neurons)}


def kernels(shape: Sequence[int], names: Sequence[str], devices: Any,
            time_left_s: float, seed: int = 0) -> dict[str, Any]:
  """similarity.compute of each kernel on random (N, K) A and (N, M) P.

  Args:
    shape: (N, M, K).
    names: kernel names; "name:K" runs that kernel on the first K neurons
      only (rank_reorder sorts N * top_fraction values per neuron and
      concept: at the paper's K it would take minutes).
    devices: "auto" or a device count.
    time_left_s: kernels not started by then are recorded as skipped.
    seed: seed of A and P.
  """
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  start = time.perf_counter()
  n, m, k = (int(v) for v in shape)
  key_a, key_p = jax.random.split(jax.random.key(seed))
  a = jax.random.normal(key_a, (n, k), jnp.float32)
  # CLIP cosine similarities of unrelated images and texts lie about here.
  p = jax.random.uniform(key_p, (n, m), jnp.float32, 0.1, 0.35)
  out = []
  for spec in names:
    name, _, width = spec.partition(":")
    width = min(int(width), k) if width else k
    if time.perf_counter() - start > time_left_s:
      out.append({"fn": name, "K": width, "skipped": "time budget"})
      continue
    a_used = a if width == k else a[:, :width]
    run = lambda name=name, a_used=a_used: similarity.compute(
        name, a_used, p, devices=_devices_arg(devices)).block_until_ready()
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    run()
    out.append({"fn": name, "K": width, "first_s": first,
                "seconds": time.perf_counter() - t0,
                "device_memory": _device_memory()})
  return {"N": n, "M": m, "K": k, "kernels": out}


def _layer_arrays(result_dir: str, layer: str):
  """(run, A of `layer` (N, K), P (N, M)) of a results directory."""
  from jax_dissect.store import results as results_lib  # pylint: disable=g-import-not-at-top
  run = results_lib.load_run(result_dir)
  return run, run.activations(layer), run.concept_activations()


def pvalues(result_dir: str, layer: str, num_permutations: int,
            seed: int = 0) -> dict[str, Any]:
  """Permutation p-values of a layer's labels (scoring.label_pvalues)."""
  from jax_dissect import similarity  # pylint: disable=g-import-not-at-top
  from jax_dissect.analyses import scoring  # pylint: disable=g-import-not-at-top
  t0 = time.perf_counter()
  run, a, p = _layer_arrays(result_dir, layer)
  load_s = time.perf_counter() - t0
  fn = run.similarity_fn
  kwargs = similarity.fit_hyper(fn, a.shape[0], run.kernel_kwargs(fn),
                                run.seed)
  t0 = time.perf_counter()
  sig = scoring.label_pvalues(a, p, fn, num_permutations=num_permutations,
                              seed=seed, kernel_kwargs=kwargs)
  return {"layer": layer, "similarity_fn": fn, "N": a.shape[0],
          "K": a.shape[1], "M": p.shape[1],
          "num_permutations": num_permutations, "pooled": bool(sig.pooled),
          "load_s": load_s, "seconds": time.perf_counter() - t0,
          "share_p_le_0.05": float(np.mean(sig.p_values <= 0.05)),
          "share_q_lt_0.05": float(np.mean(sig.q_values < 0.05)),
          "device_memory": _device_memory()}


def linear(result_dir: str, layer: str, max_neurons: int = 0
           ) -> dict[str, Any]:
  """Linear explanations of a layer's neurons (the first max_neurons, 0:
  all)."""
  from jax_dissect.analyses import linear_explanations as le  # pylint: disable=g-import-not-at-top
  _, a, p = _layer_arrays(result_dir, layer)
  a = np.asarray(a[:, :max_neurons] if max_neurons else a)
  t0 = time.perf_counter()
  out = le.linear_explanations(a, p)
  return {"layer": layer, "N": a.shape[0], "K": a.shape[1], "M": p.shape[1],
          "seconds": time.perf_counter() - t0,
          "mean_correlation": float(np.nanmean(out.correlation)),
          "mean_length": float(np.mean(out.lengths)),
          "device_memory": _device_memory()}


def sae(result_dir: str, layer: str, num_features: int, k: int,
        batch_size: int, steps: int, devices: Any) -> dict[str, Any]:
  """A TopK SAE trained on a layer's activations (features.train_sae)."""
  from jax_dissect import features  # pylint: disable=g-import-not-at-top
  _, a, _ = _layer_arrays(result_dir, layer)
  a = np.asarray(a, np.float32)
  t0 = time.perf_counter()
  model = features.train_sae(a, num_features, k=k, batch_size=batch_size,
                             max_steps=steps, devices=devices)
  seconds = time.perf_counter() - t0
  config = model.config
  return {"layer": layer, "rows": a.shape[0], "width": a.shape[1],
          "num_features": num_features, "k": k, "batch_size": batch_size,
          "steps": config.get("steps"), "rows_seen": config.get("rows_seen"),
          "train_seconds": config.get("train_seconds"), "total_s": seconds,
          "rows_per_s": (config["rows_seen"] / config["train_seconds"]
                         if config.get("train_seconds") else None),
          "fit": {name: v for name, v in model.fit.items()
                  if isinstance(v, (int, float, str, type(None)))},
          "device_memory": _device_memory()}


def torch_towers(work: str, folder: str, concepts: list[str],
                  tokenizer_dir: str, settings: dict, time_left_s: float
                  ) -> dict[str, Any]:
  """The PyTorch worker's answer (torch_reference/accelerator_towers.py)."""
  from jax_dissect import models  # pylint: disable=g-import-not-at-top
  from jax_dissect.data import probes  # pylint: disable=g-import-not-at-top
  paths = probes.ImageFolder(folder).paths[:settings["torch_images"]]
  spec = {"photos": paths, "concepts": concepts,
          "target_model": TORCH_TARGETS[settings["target_model"]],
          "target_size": models.get_model(
              settings["target_model"]).input_size,
          "layers": list(settings["layers"]),
          "clip_config": CLIP_CONFIGS[settings["clip"]],
          "tokenizer_dir": tokenizer_dir,
          "batch_size": settings["batch_size"],
          "text_batch": settings["torch_text_batch"],
          "num_workers": os.cpu_count() or 1,
          "dtypes": list(settings["dtypes"]), "seed": 0,
          "time_left_s": time_left_s}
  settings_path = os.path.join(work, "torch_settings.json")
  out_path = os.path.join(work, "torch_out.json")
  with open(settings_path, "w", encoding="utf-8") as f:
    json.dump(spec, f)
  start = time.perf_counter()
  _run_process([sys.executable, "-m", "torch_reference.accelerator_towers",
                settings_path, out_path], child_env({"USE_TORCH": "1"}),
               time_left_s + 120)
  with open(out_path, encoding="utf-8") as f:
    out = json.load(f)
  out["process_s"] = time.perf_counter() - start
  return out


