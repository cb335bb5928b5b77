"""describe_neurons' checks made before its first expensive stage.

Each check raises one ValueError line that names the option, the bad value
and what is allowed, so a run with a bad option or file stops in seconds
rather than after hours of forward passes: the merged config's keys and
types (`merge`), the values of every option (`check_options`), the paths it
will write (`check_paths`), a given P file (`read_p_file`, `check_p_shape`,
`check_p_columns`: constant columns carry no information) and the
similarity kernel's hyper-parameters (`check_kernel`: finite numbers).
"""

from __future__ import annotations

from collections.abc import Mapping
import difflib
import math
import os
from typing import Any

from absl import logging
import ml_collections
import numpy as np

from jax_dissect import clip
from jax_dissect import models
from jax_dissect import similarity
from jax_dissect.clip import loading as clip_loading
from jax_dissect.models import capture as activations
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import options
from jax_dissect.runtime import precision
from jax_dissect.store import files
from jax_dissect.store import integrity

# Nested options whose keys are free (validated by their consumer).
_OPEN_DICTS = ("clip_config",)
# Rows of P checked for NaN/inf per block.
_FINITE_BLOCK_ROWS = 4096


# Texts per device per call of the text tower (option text_batch_size).
DEFAULT_TEXT_BATCH_SIZE = 256


def text_batch_size(config: ml_collections.ConfigDict) -> int:
  """The text tower's batch per device: the option, or its default for a
  config saved before the option existed."""
  return config.get("text_batch_size", DEFAULT_TEXT_BATCH_SIZE)


def _nearest(name: str, allowed: list[str]) -> str:
  near = difflib.get_close_matches(name, allowed, n=3)
  if near:
    return f"did you mean {', '.join(near)}?"
  shown = ""
  for option in sorted(allowed):  # A line of <= 300 chars.
    if len(shown) + len(option) > 180:
      return f"options: {shown}... ({len(allowed)} in all, see --helpfull)"
    shown += option + ", "
  return f"options: {shown[:-2]}"


def merge(full: ml_collections.ConfigDict, given: Mapping[str, Any],
          prefix: str = "") -> None:
  """Sets the `given` options on `full` (defaults), checking keys and types.

  Raises:
    ValueError: an unknown option (with the nearest known ones) or a value
      of the wrong type.
  """
  unknown = sorted(set(given) - set(full.keys()))
  if unknown and not prefix:
    raise ValueError(f"unknown option {unknown[0]!r}; "
                     f"{_nearest(unknown[0], list(full.keys()))}")
  for key, value in given.items():
    name = prefix + key
    current = full.get(key)
    if isinstance(current, ml_collections.ConfigDict) and key not in (
        _OPEN_DICTS) and isinstance(value, Mapping):
      merge(current, value, prefix=name + ".")
      continue
    if key in _OPEN_DICTS and value is not None and not isinstance(
        value, Mapping):
      raise ValueError(f"{name}={value!r} must be a dict")
    try:
      full[key] = value
    except (TypeError, ValueError):
      expected = full.get_type(key) if key in full else None
      raise ValueError(
          f"{name}={value!r} has the wrong type"
          + (f"; expected {expected.__name__}" if expected else "")) from None


def kernel_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The similarity_kwargs that were set (placeholders left None dropped)."""
  return {k: v for k, v in config.similarity_kwargs.to_dict().items()
          if v is not None}


def check_options(config: ml_collections.ConfigDict, sharding_methods,
                  p_dtypes, fingerprints) -> None:
  """Checks the value of every option that needs no file or model."""
  options.choice("similarity_fn", config.similarity_fn, similarity.names())
  options.choice("sharding", config.sharding, sharding_methods)
  options.choice("p_dtype", config.p_dtype, p_dtypes)
  options.choice("probe_fingerprint", config.probe_fingerprint, fingerprints)
  options.choice("cache_verify", config.cache_verify, integrity.VERIFY_MODES)
  options.integer("batch_size", config.batch_size, minimum=1)
  options.integer("text_batch_size", text_batch_size(config), minimum=1)
  options.integer("max_images", config.max_images, minimum=0)
  options.integer("shard_images", config.shard_images, minimum=1)
  options.integer("num_threads", config.num_threads, minimum=0)
  options.integer("prefetch_batches", config.prefetch_batches, minimum=1)
  precision.check(config.compute_dtype)
  data_parallel.check_option(config.devices)
  options.choice("score_labels", config.get("score_labels", False),
                 (False, True))
  for name in ("seed", "target_seed", "clip_seed"):
    options.integer(name, config[name])
  for name in ("d_probe", "concept_set", "target_model", "clip_model",
               "result_dir", "activation_dir"):
    if not str(config[name] or "").strip():
      raise ValueError(f"{name} is empty")
  activations.canonical_pool(config.pool_mode)
  if not str(config.token_pool or "").strip():
    raise ValueError("token_pool is empty; allowed: "
                     f"{', '.join(activations.TOKEN_POOL_MODES)} or a prefix "
                     "token of the model (e.g. reg0)")
  template = config.prompt_template
  if template is not None and template.count("{}") != 1:
    raise ValueError(f"prompt_template={template!r} must hold exactly one "
                     "'{}', e.g. 'a photo of {}'")


def check_paths(config: ml_collections.ConfigDict) -> None:
  """The directories the run writes can be made and written, and the
  results are not inside the cache (which cleans what it does not know)."""
  result_dir = files.check_writable_dir(config.result_dir, "result_dir")
  cache_dir = files.check_writable_dir(config.activation_dir,
                                       "activation_dir")
  real_result, real_cache = (os.path.realpath(result_dir),
                             os.path.realpath(cache_dir))
  if real_result == real_cache or real_result.startswith(
      real_cache.rstrip(os.sep) + os.sep):
    raise ValueError(f"result_dir={config.result_dir!r} is inside "
                     f"activation_dir={config.activation_dir!r}; the cache "
                     "would remove its files: put them side by side")
  if config.clip_model == "random":
    if not config.clip_tokenizer:
      raise ValueError("clip_model='random' needs clip_tokenizer: a saved "
                       "CLIP tokenizer directory or OpenAI's "
                       "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.exists(config.clip_tokenizer):
      raise ValueError(f"clip_tokenizer={config.clip_tokenizer!r} does not "
                       "exist")


def check_models(config: ml_collections.ConfigDict) -> None:
  """The target model's name resolves; a random CLIP's overrides are known;
  a local backbone directory holds a supported architecture (CLIP, SigLIP)
  and its tokenizer's files (hub ids are checked when they load)."""
  models.resolve_model(config.target_model)
  if config.clip_model == "random":
    clip_loading.check_config_overrides(config.clip_config.to_dict())
  elif not config.concept_activations and os.path.isdir(
      os.path.expanduser(config.clip_model)):
    clip.check_backbone(os.path.expanduser(config.clip_model))


def check_kernel(config: ml_collections.ConfigDict, num_images: int | None,
                 num_concepts: int) -> dict[str, Any]:
  """The kernel's hyper-parameters, fitted and checked for N probe images.

  With num_images None (the probe set not yet scanned), everything that
  does not depend on N is checked. NaN and inf are refused (they made
  every score NaN and one label for every neuron).
  """
  given = kernel_options(config)
  for key, value in given.items():
    if isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"similarity_kwargs.{key}={value!r} must be a finite "
                       "number")
  if num_images is None and "top_k" in given:
    options.integer("similarity_kwargs.top_k", given["top_k"], minimum=1)
  n = num_images or 10**9
  kwargs = similarity.fit_hyper(config.similarity_fn, n, given, config.seed)
  try:
    similarity.plan_kernel(config.similarity_fn, n, 1, max(num_concepts, 2),
                           **kwargs)
  except TypeError as e:  # A hyper-parameter of the wrong kind.
    raise ValueError(f"similarity_kwargs: {e}") from None
  except ValueError as e:
    raise ValueError(f"similarity_kwargs: {e}") from None
  return kwargs


def read_p_file(path: str) -> np.ndarray:
  """A given P (N images x M concepts) .npy file, checked: (N, M) floats.

  Raises:
    ValueError: naming the file: missing, not a .npy array, not 2-D, not
      floating point, or holding NaN/inf (with the first bad position).
  """
  name = f"concept_activations {path!r}"
  if not os.path.isfile(path):
    raise ValueError(f"{name} does not exist")
  try:
    dtype, shape, size = integrity.npy_layout(path)
  except (OSError, ValueError, SyntaxError) as e:
    raise ValueError(f"{name} is not a .npy array file ({e}); save P with "
                     "numpy.save") from None
  if os.path.getsize(path) != size:
    raise ValueError(f"{name} is truncated: {os.path.getsize(path)} bytes, "
                     f"its header needs {size}")
  if len(shape) != 2:
    raise ValueError(f"{name} has shape {shape}; expected 2-D (N images, M "
                     "concepts)")
  if dtype.kind != "f":
    raise ValueError(f"{name} has dtype {dtype}; expected floating point "
                     "(float32, float16 or float64)")
  p = np.load(path, mmap_mode="r", allow_pickle=False)
  bad, first = 0, None
  for start in range(0, shape[0], _FINITE_BLOCK_ROWS):
    block = ~np.isfinite(p[start:start + _FINITE_BLOCK_ROWS])
    count = int(block.sum())
    if count and first is None:
      row, col = np.argwhere(block)[0]
      first = (start + int(row), int(col))
    bad += count
  if bad:
    raise ValueError(f"{name} has {bad} NaN/inf value(s) (first at row "
                     f"{first[0]}, column {first[1]})")
  check_p_columns(p, name)
  return p


def check_p_columns(p: np.ndarray, name: str) -> int:
  """Checks that P's columns vary over the images.

  A concept whose column is the same for every image says nothing about
  any neuron; if every column is constant (e.g. P all zeros), every neuron
  gets the same label. Read in blocks of rows (P may be memory-mapped).

  Args:
    p: P, (N images, M concepts).
    name: what P is, for the messages.

  Returns:
    The number of constant columns (a warning names it).

  Raises:
    ValueError: if every column is constant.
  """
  n, m = p.shape
  if not n or not m:
    return 0
  low = np.full(m, np.inf, np.float64)
  high = np.full(m, -np.inf, np.float64)
  for start in range(0, n, _FINITE_BLOCK_ROWS):
    block = np.asarray(p[start:start + _FINITE_BLOCK_ROWS], np.float64)
    low = np.minimum(low, block.min(axis=0))
    high = np.maximum(high, block.max(axis=0))
  constant = int(np.sum(low == high))
  if constant == m:
    raise ValueError(f"{name}: every one of its {m} columns is constant over "
                     f"the {n} images, so all neurons would get one label; P "
                     "must vary over the images")
  if constant:
    logging.warning("%s: %d of %d concept columns are constant over the "
                    "images (those concepts cannot label any neuron)", name,
                    constant, m)
  return constant


def check_p_shape(path: str, p: np.ndarray, num_images: int | None,
                  num_concepts: int) -> None:
  """P has one column per concept and (when known) one row per image."""
  n = p.shape[0] if num_images is None else num_images
  if p.shape != (n, num_concepts):
    raise ValueError(
        f"concept_activations {path!r} has shape {p.shape}; expected "
        f"(N, M) = ({n}, {num_concepts}): one row per readable probe image, "
        "one column per concept")
