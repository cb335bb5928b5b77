"""Hugging Face PyTorch SigLIP weights -> the Flax parameter tree.

`convert_state_dict` is pure: a name -> numpy array mapping (a
model.safetensors read with safetensors.numpy, no torch) in, the tree of
jax_dissect.clip.siglip.model out. Linear weights (out, in) become Dense kernels
(in, out); the patch convolution (D, C, p, p) becomes an HWIO kernel
(p, p, C, D), and Siglip2's linear patch embedding (D, p*p*C) over
(row, column, channel)-flattened patches is reshaped to the same kernel;
the pooling head's packed in_proj (3D, D) is split into q/k/v. Buffers
(position_ids) are skipped; any other key not listed here is an error
naming it, as are missing or misshapen weights.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import flax.traverse_util
import numpy as np

from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import model as model_lib


class SiglipWeightsError(ValueError):
  """A state dict that does not fit the SigLIP config (one line)."""


_Emit = Callable[[tuple[str, ...], np.ndarray], None]


def _linear(prefix: tuple[str, ...], kind: str, value: np.ndarray,
            emit: _Emit) -> None:
  if kind == "weight":
    emit(prefix + ("kernel",), value.T)
  else:
    emit(prefix + ("bias",), value)


def _norm(prefix: tuple[str, ...], kind: str, value: np.ndarray,
          emit: _Emit) -> None:
  emit(prefix + ("scale" if kind == "weight" else "bias",), value)


# Per-layer weights: torch sub-name -> (flax path, converter).
_LAYER = re.compile(
    r"encoder\.layers\.(\d+)\.(self_attn\.(?:q|k|v|out)_proj|mlp\.fc[12]|"
    r"layer_norm[12])\.(weight|bias)")
_HEAD = re.compile(r"head\.(mlp\.fc[12]|layernorm|attention\.out_proj)\."
                   r"(weight|bias)")


def _layer_weight(tower: str, name: str, value: np.ndarray, emit: _Emit
                  ) -> bool:
  m = _LAYER.fullmatch(name)
  if not m:
    return False
  index, sub, kind = m.groups()
  prefix = (tower, "encoder", f"layers_{index}", *sub.split("."))
  (_norm if sub.startswith("layer_norm") else _linear)(prefix, kind, value,
                                                      emit)
  return True


def _vision_weight(name: str, value: np.ndarray, cfg: config_lib.SiglipConfig,
                   emit: _Emit) -> bool:
  v = cfg.vision
  if _layer_weight("vision", name, value, emit):
    return True
  if name == "embeddings.patch_embedding.weight":
    p, c = v.patch_size, v.num_channels
    if value.ndim == 4:  # Conv2d (D, C, p, p).
      emit(("vision", "patch_embedding", "kernel"),
           value.transpose(2, 3, 1, 0))
    elif value.ndim == 2 and value.shape[1] == p * p * c:  # Siglip2 Linear.
      emit(("vision", "patch_embedding", "kernel"),
           value.T.reshape(p, p, c, value.shape[0]))
    else:
      raise SiglipWeightsError(
          f"vision_model.{name} has shape {value.shape}; expected "
          f"({v.hidden_size}, {c}, {p}, {p}) or ({v.hidden_size}, {p * p * c})")
    return True
  if name == "embeddings.patch_embedding.bias":
    emit(("vision", "patch_embedding", "bias"), value)
    return True
  if name == "embeddings.position_embedding.weight":
    emit(("vision", "position_embedding"), value)
    return True
  if name in ("post_layernorm.weight", "post_layernorm.bias"):
    _norm(("vision", "post_layernorm"), name.split(".")[-1], value, emit)
    return True
  if name == "head.probe":
    emit(("vision", "head", "probe"), value)
    return True
  if name in ("head.attention.in_proj_weight", "head.attention.in_proj_bias"):
    parts = np.split(value, 3, axis=0)
    for proj, part in zip(("q_proj", "k_proj", "v_proj"), parts):
      _linear(("vision", "head", "attention", proj),
              "weight" if name.endswith("weight") else "bias", part, emit)
    return True
  m = _HEAD.fullmatch(name)
  if m:
    sub, kind = m.groups()
    prefix = ("vision", "head", *sub.split("."))
    (_norm if sub == "layernorm" else _linear)(prefix, kind, value, emit)
    return True
  return False


def _text_weight(name: str, value: np.ndarray, emit: _Emit) -> bool:
  if _layer_weight("text", name, value, emit):
    return True
  if name == "embeddings.token_embedding.weight":
    emit(("text", "token_embedding", "embedding"), value)
    return True
  if name == "embeddings.position_embedding.weight":
    emit(("text", "position_embedding"), value)
    return True
  if name in ("final_layer_norm.weight", "final_layer_norm.bias"):
    _norm(("text", "final_layer_norm"), name.split(".")[-1], value, emit)
    return True
  if name in ("head.weight", "head.bias"):
    _linear(("text", "head"), name.split(".")[-1], value, emit)
    return True
  return False


def convert_state_dict(state: Mapping[str, np.ndarray],
                       cfg: config_lib.SiglipConfig) -> dict[str, Any]:
  """Flax parameters (float32 numpy) from a SiglipModel state dict.

  Args:
    state: name -> array, as SiglipModel / Siglip2Model's state_dict()
      (keys "vision_model.*", "text_model.*", "logit_scale", "logit_bias").
      A vision-only or text-only state dict (SiglipVisionModel,
      SiglipTextModel) gives that tower only.
    cfg: the settings the weights must fit.

  Returns:
    {"vision": ..., "text": ..., "logit_scale", "logit_bias"}, each part
    present when the state dict has it.

  Raises:
    SiglipWeightsError: one line naming keys that are not SigLIP weights,
      or weights missing or misshapen for `cfg`.
  """
  flat: dict[tuple[str, ...], np.ndarray] = {}
  unknown = []

  def emit(path, value):
    flat[path] = np.asarray(value, np.float32)

  for key, value in state.items():
    value = np.asarray(value)
    tower, _, name = key.partition(".")
    if key.endswith("position_ids"):  # A buffer in older checkpoints.
      continue
    if key in ("logit_scale", "logit_bias"):
      emit((key,), value.reshape(1))
    elif tower == "vision_model" and _vision_weight(name, value, cfg, emit):
      pass
    elif tower == "text_model" and _text_weight(name, value, emit):
      pass
    else:
      unknown.append(key)
  if unknown:
    message = (f"{len(unknown)} weight(s) are not SigLIP weights this "
               f"converter handles: {', '.join(sorted(unknown)[:5])}"
               f"{' ...' if len(unknown) > 5 else ''}")
    raise SiglipWeightsError(message[:300])
  return _check(flat, cfg)


def _check(flat: dict[tuple[str, ...], np.ndarray],
           cfg: config_lib.SiglipConfig) -> dict[str, Any]:
  """The unflattened tree; one-line error if it does not fit `cfg`."""
  if not flat:
    raise SiglipWeightsError("the state dict holds no SigLIP weights")
  want = flax.traverse_util.flatten_dict(model_lib.param_shapes(cfg))
  parts = {path[0] for path in flat}
  want = {k: v for k, v in want.items() if k[0] in parts}
  missing = sorted("/".join(k) for k in want.keys() - flat.keys())
  extra = sorted("/".join(k) for k in flat.keys() - want.keys())
  wrong = sorted(f"{'/'.join(k)} {flat[k].shape} != {want[k].shape}"
                 for k in want.keys() & flat.keys()
                 if tuple(flat[k].shape) != tuple(want[k].shape))
  if missing or extra or wrong:
    message = (f"weights do not fit the config: {len(missing)} missing "
               f"{missing[:3]}, {len(extra)} beyond it {extra[:3]}, "
               f"{len(wrong)} misshapen {wrong[:3]}")
    raise SiglipWeightsError(message[:300])
  return flax.traverse_util.unflatten_dict(flat)
