"""SigLIP architecture settings, read from a Hugging Face config.json.

Two model types are supported:

- "siglip": SiglipModel (SigLIP, and the fixed-resolution SigLIP 2
  checkpoints such as google/siglip2-base-patch16-224, whose config.json
  says "siglip"; they differ only in tokenizer and vocabulary size).
- "siglip2": Siglip2Model, the NaFlex variant. Its patch embedding is a
  linear layer over flattened (patch, patch, channel) pixels and its
  position embeddings are resized to each image's patch grid. At the
  config's own square grid (sqrt(num_patches) patches a side) the resize is
  the identity and the linear layer is a strided convolution, so the model
  here runs it at that one resolution; the converter reshapes the linear
  weights (see jax_dissect.clip.siglip.convert).

Every other model_type is refused with one line naming these two. The
settings are frozen (hashable) dataclasses, so a jitted function can take
them as static arguments.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

MODEL_TYPES = ("siglip", "siglip2")
# hidden_act values of transformers' ACT2FN that the Flax towers implement.
ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "gelu_new", "gelu_fast",
               "quick_gelu", "relu", "silu", "swish", "tanh")


class SiglipConfigError(ValueError):
  """A config.json that this SigLIP cannot run (one-line message)."""


@dataclasses.dataclass(frozen=True)
class TowerConfig:
  """Settings of one transformer tower (shared by vision and text).

  Attributes:
    hidden_size: width D of the residual stream.
    intermediate_size: width of the MLP's hidden layer.
    num_hidden_layers: number of encoder layers.
    num_attention_heads: heads per attention layer (divides hidden_size).
    hidden_act: activation of the MLPs, one of ACTIVATIONS.
    layer_norm_eps: epsilon of every layer norm.
  """
  hidden_size: int = 768
  intermediate_size: int = 3072
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  hidden_act: str = "gelu_pytorch_tanh"
  layer_norm_eps: float = 1e-6


@dataclasses.dataclass(frozen=True)
class VisionConfig(TowerConfig):
  """The image tower: a ViT without class token, pooled by attention.

  Attributes:
    image_size: side of the square input in pixels.
    patch_size: side of a patch (the convolution's kernel and stride).
    num_channels: input channels (3).
  """
  image_size: int = 224
  patch_size: int = 16
  num_channels: int = 3

  @property
  def grid(self) -> int:
    """Patches per side of the image."""
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.grid ** 2


@dataclasses.dataclass(frozen=True)
class TextConfig(TowerConfig):
  """The text tower: pooled at the last position, then a linear head.

  Attributes:
    vocab_size: rows of the token embedding.
    max_position_embeddings: rows of the position embedding; texts are
      padded to this length, as SigLIP was trained.
    projection_size: output width of the head (the embedding size).
  """
  vocab_size: int = 32000
  max_position_embeddings: int = 64
  projection_size: int = 768


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
  """Both towers of a SigLIP model.

  Attributes:
    vision: the image tower.
    text: the text tower.
    model_type: "siglip" or "siglip2" (selects the weight layout of the
      patch embedding in the converter; the Flax model is the same).
  """
  vision: VisionConfig = VisionConfig()
  text: TextConfig = TextConfig()
  model_type: str = "siglip"

  @property
  def embed_dim(self) -> int:
    """D of both embeddings."""
    return self.vision.hidden_size


def _tower_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
  names = {f.name for f in dataclasses.fields(cls)}
  return {k: v for k, v in values.items() if k in names}


def _check_tower(where: str, tower: TowerConfig) -> None:
  if tower.hidden_act not in ACTIVATIONS:
    raise SiglipConfigError(
        f"{where}.hidden_act={tower.hidden_act!r} is not supported; allowed: "
        f"{', '.join(ACTIVATIONS)}")
  if tower.hidden_size % tower.num_attention_heads:
    raise SiglipConfigError(
        f"{where}.hidden_size={tower.hidden_size} is not divisible by "
        f"num_attention_heads={tower.num_attention_heads}")


def from_dict(values: Mapping[str, Any], *, where: str = "config.json"
              ) -> SiglipConfig:
  """Settings from a config.json dict (SiglipConfig or Siglip2Config).

  Missing keys take transformers' defaults (those of SiglipConfig, which
  Siglip2Config shares, plus num_patches=256 for "siglip2").

  Args:
    values: the parsed config.json.
    where: what the dict came from, for messages.

  Raises:
    SiglipConfigError: (one line) for another model_type, an unsupported
      activation, a tower without the attention-pooling head
      (vision_use_head false), a non-square "siglip2" patch grid, or towers
      whose embedding sizes differ.
  """
  model_type = values.get("model_type")
  if model_type not in MODEL_TYPES:
    raise SiglipConfigError(
        f"{where} has model_type={model_type!r}; supported: "
        f"{', '.join(MODEL_TYPES)} (for CLIP use jax_dissect.clip)")
  vision_values = dict(values.get("vision_config") or {})
  text_values = dict(values.get("text_config") or {})
  if vision_values.get("vision_use_head", True) is False:
    raise SiglipConfigError(
        f"{where} has vision_config.vision_use_head=false: the image tower "
        "has no attention-pooling head, so there is no image embedding")
  if model_type == "siglip2":
    num_patches = int(vision_values.get("num_patches", 256))
    patch = int(vision_values.get("patch_size", 16))
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
      raise SiglipConfigError(
          f"{where} has vision_config.num_patches={num_patches}, not a square"
          " number; only a square patch grid is supported")
    vision_values["image_size"] = grid * patch
  vision = VisionConfig(**_tower_fields(VisionConfig, vision_values))
  text_fields = _tower_fields(TextConfig, text_values)
  # transformers: projection_size None (or absent) means hidden_size.
  text_fields["projection_size"] = text_fields.get("projection_size") or (
      text_fields.get("hidden_size", TextConfig.hidden_size))
  text = TextConfig(**text_fields)
  _check_tower(f"{where} vision_config", vision)
  _check_tower(f"{where} text_config", text)
  if vision.image_size % vision.patch_size:
    raise SiglipConfigError(
        f"{where} has image_size={vision.image_size}, not a multiple of "
        f"patch_size={vision.patch_size}")
  if text.projection_size != vision.hidden_size:
    raise SiglipConfigError(
        f"{where}: text projection_size={text.projection_size} differs from "
        f"the image embedding size (vision hidden_size={vision.hidden_size})")
  return SiglipConfig(vision=vision, text=text, model_type=model_type)


def read(path: str | os.PathLike) -> SiglipConfig:
  """Settings from a config.json file (see `from_dict`)."""
  path = os.fspath(path)
  try:
    with open(path, encoding="utf-8") as f:
      values = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise SiglipConfigError(f"cannot read {path!r}: {e}") from e
  if not isinstance(values, dict):
    raise SiglipConfigError(f"{path!r} is not a JSON object")
  return from_dict(values, where=path)
