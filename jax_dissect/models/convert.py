"""torchvision state dicts -> Flax variables, weight loaders, orbax I/O.

`convert_state_dict` is pure: it maps a state dict (parameter name -> array,
torchvision naming and NCHW/OIHW layouts) onto the variables of a Flax module
whose submodules carry the same names (see resnet.py), changing layouts on
the way. The loaders only produce state dicts (local .safetensors, local
.pth/.pt through torch, or a Hugging Face hub repo); orbax saves and restores
converted variables.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Buffers torchvision stores that have no Flax counterpart.
IGNORED_SUFFIXES = ("num_batches_tracked",)
HUB_WEIGHTS_FILENAME = "model.safetensors"
STATE_DICT_SUFFIXES = (".safetensors", ".pth", ".pt", ".pth.tar")

Variables = dict[str, Any]


class WeightsLoadError(RuntimeError):
  """Weights could not be read, downloaded or matched to a model."""


def abstract_variables(module: nn.Module,
                       input_shape: tuple[int, ...] = (1, 224, 224, 3),
                       dtype: Any = jnp.float32) -> Variables:
  """The variables tree of `module` as jax.ShapeDtypeStructs (no compute)."""
  return jax.eval_shape(module.init, jax.random.key(0),
                        jnp.zeros(input_shape, dtype))


def _torch_key_and_layout(path: tuple[str, ...]) -> tuple[str, bool]:
  """Maps a flattened Flax variable path to (torch key, needs transpose)."""
  collection, *module_path, leaf = path
  prefix = ".".join(module_path)
  names = {
      ("params", "kernel"): ("weight", True),
      ("params", "bias"): ("bias", False),
      ("params", "scale"): ("weight", False),
      ("params", "embedding"): ("weight", False),
      ("batch_stats", "mean"): ("running_mean", False),
      ("batch_stats", "var"): ("running_var", False),
  }
  if (collection, leaf) not in names:
    raise ValueError(f"no torch counterpart for Flax variable "
                     f"{'/'.join(path)!r} (collection {collection!r}, "
                     f"leaf {leaf!r}); supported leaves: "
                     f"{sorted(f'{c}/{l}' for c, l in names)}")
  name, transpose = names[(collection, leaf)]
  return f"{prefix}.{name}" if prefix else name, transpose


def _torch_to_flax_layout(array: np.ndarray) -> np.ndarray:
  """Torch (O, I, *spatial) -> Flax (*spatial, I, O); so (O, I) -> (I, O)."""
  if array.ndim < 2:
    return array
  return np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))


def _flax_to_torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) < 2:
    return tuple(shape)
  return (shape[-1], shape[-2]) + tuple(shape[:-2])


def torch_key_map(target: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
  """torch state-dict key -> flattened Flax variable path, for `target`."""
  return {_torch_key_and_layout(path)[0]: path
          for path in traverse_util.flatten_dict(target)}


def convert_state_dict(state_dict: Mapping[str, Any],
                       target: Mapping[str, Any]) -> Variables:
  """Converts a torchvision-style state dict into Flax variables.

  Conv weights (O, I, kh, kw) become kernels (kh, kw, I, O), linear weights
  (O, I) become (I, O); BatchNorm weight/bias/running_mean/running_var become
  params scale/bias and batch_stats mean/var. `num_batches_tracked` buffers
  are ignored.

  Args:
    state_dict: parameter name -> array (numpy, or anything np.asarray takes).
    target: the module's variables tree, arrays or jax.ShapeDtypeStructs
      (e.g. `abstract_variables(module)`); gives expected names, shapes and
      dtypes.

  Returns:
    {"params": ..., "batch_stats": ...}: nested dicts of numpy arrays with the
    structure, shapes and dtypes of `target`.

  Raises:
    ValueError: listing every unknown and every missing key, or naming every
      key whose shape differs with both shapes (in torch layout).
  """
  expected = {}
  for path, leaf in traverse_util.flatten_dict(target).items():
    key, transpose = _torch_key_and_layout(path)
    expected[key] = (path, transpose, tuple(leaf.shape), leaf.dtype)
  given = {k for k in state_dict if not k.endswith(IGNORED_SUFFIXES)}
  unknown = sorted(given - expected.keys())
  missing = sorted(expected.keys() - given)
  if unknown or missing:
    raise ValueError(
        f"state dict does not match the model: {len(unknown)} unknown key(s) "
        f"{unknown}; {len(missing)} missing key(s) {missing}")
  flat, mismatched = {}, []
  for key, (path, transpose, shape, dtype) in expected.items():
    array = np.asarray(state_dict[key])
    if transpose:
      array = _torch_to_flax_layout(array)
    if array.shape != shape:
      torch_shape = np.shape(state_dict[key])
      want = _flax_to_torch_shape(shape) if transpose else shape
      mismatched.append(f"{key}: state dict has shape {tuple(torch_shape)}, "
                        f"model expects {want}")
      continue
    flat[path] = np.ascontiguousarray(array, dtype=dtype)
  if mismatched:
    raise ValueError("state dict shapes do not match the model: " +
                     "; ".join(mismatched))
  return traverse_util.unflatten_dict(flat)


def check_variables(variables: Mapping[str, Any],
                    target: Mapping[str, Any]) -> None:
  """Raises ValueError unless `variables` has target's paths and shapes."""
  got = {"/".join(p): tuple(np.shape(v))
         for p, v in traverse_util.flatten_dict(variables).items()}
  want = {"/".join(p): tuple(v.shape)
          for p, v in traverse_util.flatten_dict(target).items()}
  unknown, missing = sorted(got.keys() - want), sorted(want.keys() - got)
  wrong = [f"{k}: got {got[k]}, model expects {want[k]}"
           for k in sorted(got.keys() & want.keys()) if got[k] != want[k]]
  if unknown or missing or wrong:
    raise ValueError(f"variables do not match the model: unknown {unknown}; "
                     f"missing {missing}; wrong shapes {wrong}")


def _torch_tensor_to_numpy(tensor: Any) -> np.ndarray:
  tensor = tensor.detach().cpu()
  if not tensor.dtype.is_floating_point:
    return tensor.numpy()
  return tensor.float().numpy()  # bfloat16/float16 -> float32 for numpy.


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a local .safetensors or .pth/.pt state dict into numpy arrays.

  Args:
    path: a file ending in .safetensors, .pth, .pt or .pth.tar. A torch file
      that holds {"state_dict": {...}} or {"model": {...}} is unwrapped, and
      the "module." prefix of DataParallel checkpoints (e.g. the Places365
      models) is removed.

  Returns:
    parameter name -> numpy array.

  Raises:
    WeightsLoadError: naming the file, if it is missing, of another type or
      unreadable, or if torch is needed but not installed.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsLoadError(f"weights file {path!r} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    try:
      return dict(load_file(path))
    except Exception as e:  # safetensors raises its own error types.
      raise WeightsLoadError(
          f"cannot read safetensors file {path!r}: {e}") from e
  if path.endswith((".pth", ".pt", ".pth.tar")):
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise WeightsLoadError(
          f"reading {path!r} needs PyTorch: install the torch extra "
          f"(pip install 'jax_dissect[torch]') or convert the file to "
          f".safetensors") from e
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many error types.
      raise WeightsLoadError(f"cannot read torch file {path!r}: {e}") from e
    for wrapper in ("state_dict", "model"):
      if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
      raise WeightsLoadError(
          f"torch file {path!r} holds a {type(obj).__name__}, not a state dict")
    if obj and all(k.startswith("module.") for k in obj):
      obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: _torch_tensor_to_numpy(v) for k, v in obj.items()}
  raise WeightsLoadError(f"weights file {path!r} has an unsupported type; "
                         f"allowed suffixes: {list(STATE_DICT_SUFFIXES)}")


def download_hub_state_dict(
    repo_id: str, filename: str = HUB_WEIGHTS_FILENAME,
    revision: str | None = None,
    download: Callable[..., str] | None = None) -> dict[str, np.ndarray]:
  """Downloads a safetensors state dict from the Hugging Face hub.

  Args:
    repo_id: hub repository, e.g. "timm/resnet50.tv_in1k" (torchvision's
      weights under torchvision's names).
    filename: file inside the repository.
    revision: branch, tag or commit; None for the default branch.
    download: stand-in for huggingface_hub.hf_hub_download (tests).

  Returns:
    parameter name -> numpy array.

  Raises:
    WeightsLoadError: if the download fails (offline, unknown repo), with a
      hint to pass a local file instead.
  """
  if download is None:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
    download = huggingface_hub.hf_hub_download
  try:
    path = download(repo_id=repo_id, filename=filename, revision=revision)
  except Exception as e:  # hub errors: offline, 404, auth, network.
    raise WeightsLoadError(
        f"cannot download {filename!r} from Hugging Face hub repo "
        f"{repo_id!r} ({type(e).__name__}: {e}). If this machine is offline, "
        f"download the file elsewhere and pass its local path (.safetensors, "
        f".pth or .pt) or an orbax checkpoint directory as the weights") from e
  return load_state_dict(path)


def save_variables(directory: str | os.PathLike, variables: Variables,
                   force: bool = False) -> str:
  """Saves Flax variables as an orbax checkpoint; returns its absolute path."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(os.fspath(directory))
  variables = jax.tree.map(np.asarray, variables)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(directory, variables, force=force)
    checkpointer.wait_until_finished()
  return directory


def restore_variables(directory: str | os.PathLike,
                      target: Mapping[str, Any] | None = None) -> Variables:
  """Restores variables saved by `save_variables` as numpy arrays.

  Args:
    directory: the orbax checkpoint directory.
    target: optional variables tree (arrays or ShapeDtypeStructs) the
      checkpoint must match; checked with `check_variables`.

  Raises:
    WeightsLoadError: if the directory is not a readable orbax checkpoint.
    ValueError: if the restored tree does not match `target`.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.abspath(os.fspath(directory))
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      restored = checkpointer.restore(directory)
  except Exception as e:  # orbax raises many error types.
    raise WeightsLoadError(
        f"cannot restore orbax checkpoint {directory!r}: {e}") from e
  restored = jax.tree.map(np.asarray, restored)
  if target is not None:
    check_variables(restored, target)
  return restored
