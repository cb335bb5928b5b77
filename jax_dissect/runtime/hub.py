"""Loading Hugging Face Flax models' weights without torch.

Shared by jax_dissect.clip (the CLIP embedder) and jax_dissect.models.hf
(ViT and CLIP's image tower as targets). A model is a hub id or a local
directory holding config.json and single-file weights: flax_model.msgpack,
model.safetensors (Flax or PyTorch layout; PyTorch tensors are converted
with transformers' converter, no torch needed) or pytorch_model.bin (needs
torch). Errors are raised as the caller's error class, and an unreachable
hub says so and suggests a local directory.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from absl import logging
import flax.serialization
import flax.traverse_util
import huggingface_hub
import jax
import numpy as np
import safetensors
import safetensors.numpy

WEIGHT_FILES = ("flax_model.msgpack", "model.safetensors",
                "pytorch_model.bin")
UNREACHABLE = ("the Hugging Face hub cannot be reached (no network, or "
               "HF_HUB_OFFLINE=1) and it is not in the local cache")

ErrorClass = Callable[[str], Exception]


def transformers_lib():
  """transformers, imported on first use, never on import of jax_dissect.

  Importing transformers with PyTorch installed and USE_TORCH unset imports
  torch (seconds); the command-line entry points set USE_TORCH=0 first
  unless a command needs PyTorch (jax_dissect.commands.setup_environment).
  """
  import transformers  # pylint: disable=g-import-not-at-top
  return transformers


def looks_like_path(name: str) -> bool:
  """True for names that can only be local paths (not "owner/repo")."""
  return (name.startswith(("/", ".", "~")) or name.count("/") > 1 or
          os.sep != "/" and os.sep in name)


def unreachable(err: BaseException | None) -> bool:
  """True if `err` (or its cause) says the hub could not be reached."""
  while err is not None:
    if isinstance(err, (huggingface_hub.errors.OfflineModeIsEnabled,
                        huggingface_hub.errors.LocalEntryNotFoundError,
                        ConnectionError)) or (
                            "couldn't connect" in str(err).lower()):
      return True
    err = err.__cause__ or err.__context__
  return False


def reason(err: BaseException | None) -> str:
  """Why loading failed, in words, for an error message."""
  if err is None or unreachable(err):
    return UNREACHABLE
  return f"{type(err).__name__}: {err}"


def fetch(name: str, filename: str, hub_kwargs: Mapping[str, Any]
          ) -> str | None:
  """Path of `filename` in a local dir or hub repo; None if it has none.

  Raises:
    huggingface_hub.errors.LocalEntryNotFoundError: offline and not cached.
    OSError / HfHubHTTPError: other hub failures.
  """
  if os.path.isdir(name):
    path = os.path.join(name, filename)
    return path if os.path.isfile(path) else None
  try:
    return huggingface_hub.hf_hub_download(name, filename, **hub_kwargs)
  except huggingface_hub.errors.LocalEntryNotFoundError:
    raise
  except huggingface_hub.errors.EntryNotFoundError:
    return None


def fetch_files(name: str, hub_kwargs: Mapping[str, Any], *,
                error: ErrorClass,
                hub_error: Callable[[BaseException | None], Exception],
                what: str = "model") -> tuple[str, str]:
  """(config.json path, weights path) of a hub repo or local directory.

  Args:
    name: hub id or local directory.
    hub_kwargs: revision, cache_dir, local_files_only... for the hub.
    error: the caller's error class, for missing directories and files.
    hub_error: makes the caller's error for a hub failure (None: the hub
      was unreachable).
    what: what the model is, for messages ("CLIP", "model").

  Returns:
    (config file, weights file); weights are the first of WEIGHT_FILES.
  """
  if not os.path.isdir(name) and looks_like_path(name):
    raise error(f"local {what} directory {name!r} does not exist")
  offline, weights = None, None
  try:
    config_file = fetch(name, "config.json", hub_kwargs)
    for filename in WEIGHT_FILES:
      try:
        weights = fetch(name, filename, hub_kwargs)
      except huggingface_hub.errors.LocalEntryNotFoundError as e:
        offline = e  # Offline: the next file may still be cached.
        continue
      if weights:
        break
  except (OSError, ValueError, huggingface_hub.errors.HfHubHTTPError) as e:
    raise hub_error(e) from e
  where = (f"local {what} directory {name!r}" if os.path.isdir(name) else
           f"hub repo {name!r}")
  if config_file is None:
    raise error(f"{where} has no config.json")
  if weights is None:
    if offline is not None:
      raise hub_error(offline)
    raise error(f"{where} has no single-file weights "
                f"({', '.join(WEIGHT_FILES)})")
  return config_file, weights


def pytorch_state_dict(path: str, error: ErrorClass) -> dict[str, np.ndarray]:
  """Reads model.safetensors or pytorch_model.bin as float32 numpy arrays."""
  if path.endswith(".safetensors"):
    return {k: np.asarray(v, np.float32)
            for k, v in safetensors.numpy.load_file(path).items()}
  try:
    import torch
  except ImportError as e:
    raise error(
        f"{path!r} holds PyTorch weights, which need torch to read: "
        "pip install -e '.[torch]' (or save the model with safetensors)"
        ) from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.float().numpy() for k, v in state.items()}


def check_params(name: str, params: Any, shapes: Any, error: ErrorClass
                 ) -> Any:
  """Keeps the model's parameters; errors on missing or misshapen ones."""
  flat = flax.traverse_util.flatten_dict(params)
  want = flax.traverse_util.flatten_dict(shapes)
  missing = sorted("/".join(k) for k in want.keys() - flat.keys())
  wrong = sorted(f"{'/'.join(k)}: {flat[k].shape} != {want[k].shape}"
                 for k in want.keys() & flat.keys()
                 if tuple(flat[k].shape) != tuple(want[k].shape))
  if missing or wrong:
    raise error(
        f"weights of {name!r} do not fit its config: {len(missing)} missing "
        f"{missing[:5]}, {len(wrong)} misshapen {wrong[:5]}")
  unused = flat.keys() - want.keys()
  if unused:
    logging.warning("%s: %d unused weights, e.g. %s", name, len(unused),
                    "/".join(sorted(unused)[0]))
  return flax.traverse_util.unflatten_dict(
      {k: np.asarray(flat[k], np.float32) for k in want})


class _ShapeOnlyModel:
  """What transformers' PyTorch->Flax converter reads from a model: the
  parameter tree (only shapes are used) and the base model prefix."""

  def __init__(self, model: Any):
    self.params = model.params_shape_tree
    self.base_model_prefix = model.base_model_prefix


def read_params(weights: str, model: Any, name: str, error: ErrorClass,
                fix: Callable[[Any], Any] | None = None) -> Any:
  """Reads `model`'s parameters (numpy float32) from a weights file.

  Args:
    weights: flax_model.msgpack, model.safetensors (Flax or PyTorch
      layout) or pytorch_model.bin (needs torch).
    model: a transformers Flax model made with `_do_init=False`.
    name: the model's name, for errors.
    error: the caller's error class.
    fix: optional function applied to the parameter tree before it is
      checked (e.g. to tie an output layer to the input embeddings).

  Raises:
    error: if parameters are missing or misshapen.
  """
  fmt = None
  if weights.endswith(".safetensors"):
    with safetensors.safe_open(weights, framework="np") as f:
      fmt = (f.metadata() or {}).get("format")
  if weights.endswith(".msgpack"):
    with open(weights, "rb") as f:
      params = flax.serialization.msgpack_restore(f.read())
  elif fmt == "flax":
    params = flax.traverse_util.unflatten_dict(
        safetensors.numpy.load_file(weights), sep=".")
  else:
    logging.info("converting PyTorch weights %s", weights)
    # transformers is imported here, on first use (see jax_dissect.clip).
    from transformers.modeling_flax_pytorch_utils import (  # pylint: disable=g-import-not-at-top
      convert_pytorch_state_dict_to_flax,
    )
    params = convert_pytorch_state_dict_to_flax(
        pytorch_state_dict(weights, error), _ShapeOnlyModel(model))
  if fix is not None:
    params = fix(params)
  return check_params(name, params, model.params_shape_tree, error)


def random_params(shapes: Any, seed: int) -> Any:
  """Random parameters drawn with numpy (much faster than model init).

  Layer-norm scales are 1 and biases 0, logit_scale is log(1/0.07) as in
  CLIP, every other weight is N(0, 0.02^2); the same seed gives the same
  parameters.
  """
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    last = str(getattr(path[-1], "key", path[-1]))
    if last == "scale":
      return np.ones(leaf.shape, np.float32)
    if last == "bias":
      return np.zeros(leaf.shape, np.float32)
    if last == "logit_scale":
      return np.full(leaf.shape, np.log(1 / 0.07), np.float32)
    return rng.normal(0.0, 0.02, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(init, shapes)
