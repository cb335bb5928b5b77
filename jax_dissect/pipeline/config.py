"""describe_neurons' options: every option with its default, and the
check of a given config against them (pipeline.checks) before any work."""

from __future__ import annotations

from typing import Sequence

import ml_collections

from jax_dissect.data import loader
from jax_dissect.data import probes
from jax_dissect.pipeline import checks
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import precision
from jax_dissect.similarity import registry as kernel_registry
from jax_dissect.similarity import sharding

SHARDING_METHODS = ("auto", "none") + sharding.METHODS
P_DTYPES = ("float32", "float16", "bfloat16")
PROBE_FINGERPRINTS = probes.FINGERPRINTS


def default_config() -> ml_collections.ConfigDict:
  """Every option of describe_neurons, with the reference CLI's defaults."""
  c = ml_collections.ConfigDict()
  # The reference CLI's options (same names and defaults).
  # The backbone of P: a CLIP or SigLIP / SigLIP 2 hub id or local
  # directory (architecture from its config.json), or "random" (a CLIP).
  c.clip_model = "openai/clip-vit-base-patch16"
  c.target_model = "resnet50"
  c.target_layers = "conv1,layer1,layer2,layer3,layer4"
  c.d_probe = "imagenet_broden"
  c.concept_set = "data/20k.txt"
  c.batch_size = 200  # Images per device per forward call.
  # Texts per device per call of the CLIP text tower: short concepts need
  # large batches to keep the matrix products efficient.
  c.text_batch_size = checks.DEFAULT_TEXT_BATCH_SIZE
  c.pool_mode = "avg"
  # (B, T, C) token maps (ViTs): "cls", "mean" (all tokens), "patch_mean",
  # "patch_max" (patch tokens, after the model's prefix tokens), or a
  # prefix token's name (ModelSpec.prefix_tokens, e.g. "reg0").
  c.token_pool = "cls"
  c.similarity_fn = "soft_wpmi"
  c.result_dir = "results"
  c.activation_dir = "saved_activations"  # The cache directory.
  # jax_dissect's own options.
  c.target_weights = ml_collections.config_dict.placeholder(str)
  c.target_seed = 0  # Seed of target_weights="random".
  c.clip_seed = 0  # Seed of clip_model="random".
  c.clip_tokenizer = ""  # Directory or BPE .txt.gz, for clip_model="random".
  c.clip_config = ml_collections.ConfigDict()  # CLIPConfig overrides (random).
  # The kernel's hyper-parameters, e.g. {"top_k": 50}; unset ones take the
  # kernel's defaults (kernel_registry.get_kernel(name).defaults).
  c.similarity_kwargs = _similarity_kwargs()
  c.seed = 0  # rank_reorder's permutations.
  c.prompt_template = ml_collections.config_dict.placeholder(str)
  c.p_dtype = "float32"
  c.concept_activations = ""  # A precomputed P (N, M) .npy, instead of CLIP.
  c.sharding = "auto"  # auto | none | shard_map | pmap.
  c.shard_images = 2048  # Probe images per saved cache shard.
  c.strict = False  # Unreadable probe images: error instead of skip.
  c.max_images = 0  # Use only the first max_images probe images (0 = all).
  c.num_threads = 0  # Image decoding threads; 0 = every CPU.
  # Batches per device decoded ahead of the forward passes.
  c.prefetch_batches = loader.DEFAULT_PREFETCH
  # Local devices of the forward passes and of the kernels: "auto" (all)
  # or a count (per process).
  c.devices = ml_collections.FieldReference(data_parallel.AUTO,
                                           field_type=object)
  # Forward passes (CLIP, target) in float32, bfloat16 or float16; A, P and
  # the embeddings are float32 either way.
  c.compute_dtype = precision.DEFAULT
  c.tfds_data_dir = ml_collections.config_dict.placeholder(str)
  c.tfds_manual_dir = ml_collections.config_dict.placeholder(str)
  c.broden_dir = ml_collections.config_dict.placeholder(str)
  # Identity of image-folder probe sets in the cache keys: "stat" (each
  # file's path, size and mtime: free, but an image rewritten with the same
  # size and mtime keeps its old entries) or "content" (SHA-256 of each
  # file's bytes, hashed in parallel once and then reused while the file's
  # size, mtime, ctime and inode stay the same).
  c.probe_fingerprint = "stat"
  # Cache reads: "checksum" (size, header and CRC-32 of each entry, once per
  # process) or "header" (size and header only).
  c.cache_verify = "checksum"
  # After labelling, run the scoring analysis (simulation scores, p- and
  # q-values of every label; analysis/explanation_scores.csv) with its
  # default options.
  c.score_labels = False
  return c


def _similarity_kwargs() -> ml_collections.ConfigDict:
  """Every registered kernel's hyper-parameters as typed, unset options."""
  kwargs = ml_collections.ConfigDict()
  for name in kernel_registry.names():
    for key, default in kernel_registry.get_kernel(name).defaults.items():
      if key not in kwargs and isinstance(default, (int, float)):
        kwargs[key] = ml_collections.config_dict.placeholder(type(default))
  return kwargs


def split_layers(spec: str | Sequence[str]) -> list[str]:
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


def full_config(config) -> ml_collections.ConfigDict:
  """The defaults with `config` set on them, every option checked."""
  full = default_config()
  checks.merge(full, config.to_dict() if hasattr(config, "to_dict")
                  else dict(config))
  checks.check_options(full, SHARDING_METHODS, P_DTYPES,
                          PROBE_FINGERPRINTS)
  return full
