"""A target model's spec (ModelSpec: constructor, weights, preprocessing)
and seeded random variables for offline runs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Callable, Mapping

from flax import traverse_util
import flax.linen as nn
import jax
import numpy as np

from jax_dissect.data import preprocess
from jax_dissect.models import convert

RANDOM_WEIGHTS = "random"


def randomize_batch_norm(variables: Mapping[str, Any],
                         seed: int = 0) -> convert.Variables:
  """Gives every BatchNorm non-trivial statistics and affine parameters.

  Running means ~ N(0, 0.1^2), running variances ~ U(0.5, 1.5), scales ~
  U(0.5, 1.5), biases ~ N(0, 0.1^2), so inference BatchNorm is not the
  identity (checks of conversion and capture then mean something).

  Args:
    variables: {"params", "batch_stats"} of a module with BatchNorms.
    seed: numpy random seed.

  Returns:
    A new variables tree of numpy float32 arrays.
  """
  rng = np.random.default_rng(seed)
  flat = {p: np.asarray(v) for p, v in
          traverse_util.flatten_dict(dict(variables)).items()}
  norm_paths = {p[1:-1] for p in flat if p[0] == "batch_stats"}
  for path, value in sorted(flat.items()):
    if path[1:-1] not in norm_paths:
      continue
    kind = (path[0], path[-1])
    if kind in (("batch_stats", "var"), ("params", "scale")):
      new = rng.uniform(0.5, 1.5, value.shape)
    elif kind in (("batch_stats", "mean"), ("params", "bias")):
      new = rng.normal(0.0, 0.1, value.shape)
    else:
      continue
    flat[path] = new.astype(value.dtype)
  return traverse_util.unflatten_dict(flat)


def random_variables(target: Mapping[str, Any],
                     seed: int = 0) -> convert.Variables:
  """Seeded random variables shaped like `target`, drawn with numpy.

  Kernels are He-normal (std sqrt(2 / fan_in), fan_in = product of all but
  the last axis), other params N(0, 0.01^2), then `randomize_batch_norm`
  gives the BatchNorms non-trivial statistics. Numpy makes this instant
  where jax's module.init compiles for seconds on a CPU.

  Args:
    target: variables tree of arrays or jax.ShapeDtypeStructs.
    seed: numpy random seed.

  Returns:
    A variables tree of numpy arrays with target's shapes and dtypes.
  """
  rng = np.random.default_rng(seed)
  flat = {}
  for path, leaf in sorted(traverse_util.flatten_dict(dict(target)).items()):
    shape = tuple(leaf.shape)
    if path[-1] == "kernel":
      fan_in = int(np.prod(shape[:-1]))
      value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    elif path[0] == "batch_stats":
      value = np.zeros(shape) if path[-1] == "mean" else np.ones(shape)
    else:
      value = rng.normal(0.0, 0.01, shape)
    flat[path] = value.astype(leaf.dtype)
  return randomize_batch_norm(traverse_util.unflatten_dict(flat), seed + 1)


def weights_fingerprint(variables: Mapping[str, Any]) -> str:
  """A stable SHA-256 hex digest of all variable paths, dtypes, shapes, bytes.

  Equal for equal arrays whatever their container (numpy or jax arrays,
  dict, FrozenDict, nnx.State or its pure dict), so it can key caches of
  activations.
  """
  if hasattr(variables, "to_pure_dict"):  # nnx.State.
    from flax import nnx  # pylint: disable=g-import-not-at-top
    variables = nnx.to_pure_dict(variables)
  digest = hashlib.sha256()
  flat = {tuple(str(k) for k in path): value for path, value in
          traverse_util.flatten_dict(
              jax.tree.map(np.asarray, dict(variables))).items()}
  for path in sorted(flat):
    array = np.ascontiguousarray(flat[path])
    digest.update("/".join(path).encode())
    digest.update(f"|{array.dtype.str}|{array.shape}|".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A target model: how to build it, where its weights are, its inputs.

  Attributes:
    name: registry name.
    constructor: builds the Flax module (no arguments).
    default_weights: weights used when `load(weights=None)`: a hub repo id
      whose model.safetensors has torchvision key names, or "" when there
      is no downloadable default (a weights file must then be given).
    transform: the model's eval preprocessing (PIL image -> (S, S, 3)).
    num_classes: outputs of the classifier (0 if unknown or none).
    input_size: side of the square input the transform produces.
    loader: optional `loader(weights, seed) -> (module, variables)` that
      replaces the torchvision-state-dict loading of `load` (weights is
      already resolved: `default_weights` when none are given). Models
      that are not torchvision ports (Hugging Face models, nnx modules,
      your own checkpoints) load through it; see models/hf.py.
    prefix_tokens: names of the tokens a transformer puts before its patch
      tokens, in order (CLS, registers, distillation token): token_pool
      may name one (e.g. "reg0") and patch_mean / patch_max skip them all.
      ("cls",) for ViT and CLIP; e.g. ("cls", "reg0", "reg1", "reg2",
      "reg3") for a ViT with four registers; () for a model without
      prefix tokens.
  """
  name: str
  constructor: Callable[[], nn.Module]
  default_weights: str
  transform: preprocess.ImageTransform
  num_classes: int = 0
  input_size: int = 224
  loader: Callable[[str, int], tuple[Any, Any]] | None = None
  prefix_tokens: tuple[str, ...] = ("cls",)

  def build(self) -> nn.Module:
    """Returns a new Flax module (unbound)."""
    return self.constructor()

  def abstract_variables(self) -> convert.Variables:
    """The variables tree as ShapeDtypeStructs (for checks, no compute)."""
    return convert.abstract_variables(
        self.build(), (1, self.input_size, self.input_size, 3))

  def init_random(self, seed: int = 0) -> convert.Variables:
    """Seeded random variables with non-trivial BatchNorm statistics."""
    return random_variables(self.abstract_variables(), seed)

  def load(self, weights: str | os.PathLike | None = None,
           seed: int = 0) -> tuple[nn.Module, convert.Variables]:
    """Builds the module and loads its variables.

    Args:
      weights: one of
        - None: `default_weights` (downloaded from the hub);
        - "random": `init_random(seed)`, no file or network needed;
        - a local .safetensors/.pth/.pt file with torchvision key names;
        - a local orbax checkpoint directory written by
          `convert.save_variables`;
        - a Hugging Face hub repo id "owner/name" holding model.safetensors.
      seed: seed of the random weights.

    Returns:
      (module, variables) where variables = {"params", "batch_stats"} of
      numpy arrays.

    Raises:
      convert.WeightsLoadError: if the weights cannot be read or downloaded.
      ValueError: if `weights` is none of the above, or does not fit the
        model (unknown/missing keys, wrong shapes).
    """
    weights = self.default_weights if weights is None else os.fspath(weights)
    if self.loader is not None:
      return self.loader(weights, seed)
    module = self.build()
    if not weights:
      raise ValueError(
          f"model {self.name!r} has no downloadable default weights; pass "
          f"weights (--target_weights): a local .pth/.pth.tar/.safetensors "
          f"file with torchvision key names, or {RANDOM_WEIGHTS!r}")
    if weights == RANDOM_WEIGHTS:
      return module, self.init_random(seed)
    target = self.abstract_variables()
    if os.path.isdir(weights):
      return module, convert.restore_variables(weights, target)
    if os.path.isfile(weights) or weights.endswith(
        convert.STATE_DICT_SUFFIXES):
      state_dict = convert.load_state_dict(weights)
    elif _looks_like_hub_id(weights):
      state_dict = convert.download_hub_state_dict(weights)
    else:
      raise ValueError(
          f"weights={weights!r} is not {RANDOM_WEIGHTS!r}, an existing "
          f"file or directory, or a hub repo id 'owner/name'")
    return module, convert.convert_state_dict(state_dict, target)


def _looks_like_hub_id(text: str) -> bool:
  parts = text.split("/")
  return len(parts) == 2 and all(parts) and not text.startswith((".", "~"))
