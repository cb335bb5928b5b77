"""Writing a SigLIP checkpoint directory as transformers' save_pretrained does.

The inverse of jax_dissect.clip.siglip.load: the Flax parameter tree back
to SiglipModel's (or Siglip2Model's) PyTorch state dict names and layouts
(`to_state_dict`, the inverse of convert.convert_state_dict), written with
safetensors' numpy API (no torch), plus config.json, the tokenizer and
preprocessor_config.json. So a random SigLIP made here (offline tests and
smoke runs) is a local directory `load.load` and describe_neurons'
clip_model read like any published checkpoint:

  save.save_pretrained(out_dir, cfg, params, tokenizer, transform)
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import flax.traverse_util
import numpy as np
import safetensors.numpy

from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import load
from jax_dissect.data import preprocess
from jax_dissect.store import files

# preprocess.RESAMPLE name -> PIL filter code (load._PIL_RESAMPLE inverted).
_PIL_CODES = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3}
_ARCHITECTURES = {"siglip": "SiglipModel", "siglip2": "Siglip2Model"}
_PROCESSORS = {"siglip": "SiglipImageProcessor",
               "siglip2": "Siglip2ImageProcessor"}


def _torch_linear(name: str, leaf: str, value: np.ndarray
                  ) -> tuple[str, np.ndarray]:
  """A Dense / LayerNorm leaf as (torch key, array)."""
  if leaf == "kernel":
    return f"{name}.weight", value.T
  if leaf == "scale":
    return f"{name}.weight", value
  return f"{name}.bias", value


def to_state_dict(params: Any, cfg: config_lib.SiglipConfig
                  ) -> dict[str, np.ndarray]:
  """SiglipModel / Siglip2Model state dict (float32 numpy) of Flax params.

  Args:
    params: the tree of jax_dissect.clip.siglip.model (both towers, and
      logit_scale / logit_bias when present).
    cfg: its settings (model_type "siglip2" writes the linear patch
      embedding of Siglip2Model).

  Returns:
    name -> array; convert.convert_state_dict(result, cfg) gives `params`
    back.
  """
  flat = flax.traverse_util.flatten_dict(params)
  out: dict[str, np.ndarray] = {}
  head_qkv: dict[str, dict[str, np.ndarray]] = {"weight": {}, "bias": {}}
  for path, value in flat.items():
    value = np.asarray(value, np.float32)
    if path in (("logit_scale",), ("logit_bias",)):
      out[path[0]] = value.reshape(1)
      continue
    tower, rest = path[0], path[1:]
    prefix = f"{tower}_model"
    if rest[0] == "encoder":  # ("encoder", "layers_i", *module, leaf)
      index = rest[1].split("_")[1]
      module = ".".join(rest[2:-1])
      key, array = _torch_linear(
          f"{prefix}.encoder.layers.{index}.{module}", rest[-1], value)
    elif rest == ("patch_embedding", "kernel"):
      p, _, c, d = value.shape
      key = f"{prefix}.embeddings.patch_embedding.weight"
      array = (value.reshape(p * p * c, d).T if cfg.model_type == "siglip2"
               else value.transpose(3, 2, 0, 1))
    elif rest == ("patch_embedding", "bias"):
      key, array = f"{prefix}.embeddings.patch_embedding.bias", value
    elif rest == ("position_embedding",):
      key, array = f"{prefix}.embeddings.position_embedding.weight", value
    elif rest == ("token_embedding", "embedding"):
      key, array = f"{prefix}.embeddings.token_embedding.weight", value
    elif rest == ("head", "probe"):
      key, array = f"{prefix}.head.probe", value
    elif rest[:2] == ("head", "attention") and rest[2] != "out_proj":
      kind = "weight" if rest[-1] == "kernel" else "bias"
      head_qkv[kind][rest[2]] = value.T if kind == "weight" else value
      continue
    else:
      key, array = _torch_linear(f"{prefix}.{'.'.join(rest[:-1])}", rest[-1],
                                 value)
    out[key] = np.ascontiguousarray(array)
  for kind, parts in head_qkv.items():
    if parts:
      # C order: safetensors writes an array's buffer as it lies.
      out[f"vision_model.head.attention.in_proj_{kind}"] = (
          np.ascontiguousarray(np.concatenate(
              [parts[name] for name in ("q_proj", "k_proj", "v_proj")])))
  return out


def config_dict(cfg: config_lib.SiglipConfig, tokenizer: Any = None
                ) -> dict[str, Any]:
  """config.json of a SiglipConfig / Siglip2Config (special token ids from
  `tokenizer` when given)."""
  tower_keys = [f.name for f in dataclasses.fields(config_lib.TowerConfig)]
  vision = {k: getattr(cfg.vision, k) for k in tower_keys}
  vision.update(patch_size=cfg.vision.patch_size,
                num_channels=cfg.vision.num_channels)
  if cfg.model_type == "siglip2":
    vision["num_patches"] = cfg.vision.num_patches
  else:
    vision["image_size"] = cfg.vision.image_size
  text = {k: getattr(cfg.text, k) for k in tower_keys}
  text.update(vocab_size=cfg.text.vocab_size,
              max_position_embeddings=cfg.text.max_position_embeddings,
              projection_size=cfg.text.projection_size)
  if tokenizer is not None:
    for name in ("pad", "bos", "eos"):
      token = getattr(tokenizer, f"{name}_token_id", None)
      if token is not None:
        text[f"{name}_token_id"] = int(token)
  return {"architectures": [_ARCHITECTURES[cfg.model_type]],
          "model_type": cfg.model_type, "text_config": text,
          "vision_config": vision}


def preprocessor_dict(transform: preprocess.ImageTransform,
                      cfg: config_lib.SiglipConfig) -> dict[str, Any]:
  """preprocessor_config.json that load.image_transform reads back as
  `transform` (resize straight to the square input, rescale 1/255, mean,
  std)."""
  if transform.resize_mode != "square" or transform.crop != (
      cfg.vision.image_size):
    raise ValueError(f"a SigLIP transform resizes straight to "
                     f"{cfg.vision.image_size}x{cfg.vision.image_size}; got "
                     f"{transform}")
  values = {"image_processor_type": _PROCESSORS[cfg.model_type],
            "do_resize": True, "resample": _PIL_CODES[transform.resample],
            "do_rescale": True, "rescale_factor": 1 / 255,
            "do_normalize": True, "image_mean": list(transform.mean),
            "image_std": list(transform.std)}
  side = cfg.vision.image_size
  if cfg.model_type == "siglip2":
    values.update(patch_size=cfg.vision.patch_size,
                  max_num_patches=cfg.vision.num_patches)
  else:
    values["size"] = {"height": side, "width": side}
  return values


def save_pretrained(out_dir: str | os.PathLike,
                    cfg: config_lib.SiglipConfig, params: Any,
                    tokenizer: Any,
                    transform: preprocess.ImageTransform | None = None
                    ) -> str:
  """Writes a checkpoint directory that load.load reads back.

  Args:
    out_dir: the directory (created).
    cfg: the settings.
    params: both towers' parameters.
    tokenizer: a transformers tokenizer (saved with save_pretrained).
    transform: the preprocessing; default the image processor's defaults
      for cfg.model_type (load.image_transform of no file).

  Returns:
    out_dir.
  """
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  if transform is None:
    transform = load.image_transform(None, cfg)
  state = to_state_dict(params, cfg)
  files.write_with(os.path.join(out_dir, load.WEIGHTS),
                   lambda path: safetensors.numpy.save_file(
                       state, path, metadata={"format": "pt"}))
  files.write_json(os.path.join(out_dir, "config.json"),
                   config_dict(cfg, tokenizer), indent=2)
  files.write_json(os.path.join(out_dir, load.PREPROCESSOR),
                   preprocessor_dict(transform, cfg), indent=2)
  tokenizer.save_pretrained(out_dir)
  return out_dir
