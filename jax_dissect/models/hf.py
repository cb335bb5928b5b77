"""Hugging Face Flax vision models as targets: ViT and CLIP's image tower.

The target is the model's linen module itself, applied to NHWC pixels (the
Hugging Face `FlaxPreTrainedModel.__call__` only transposes NCHW to NHWC
before calling it), with variables {"params": params}; so
`activations.list_layers` / `collect_activations` and the pipeline use it
like any linen module. Layers are named by module path.

ViT (FlaxViTForImageClassification; FlaxViTModel has the same names
without the "vit." prefix and a "pooler" instead of "classifier"):

  vit.embeddings               (B, 1 + P, C)  patch + CLS embeddings
  vit.encoder.layer.{i}        (B, 1 + P, C)  output of block i (0-based)
  vit.encoder.layer.{i}.attention / .intermediate / .output   inside block i
  vit.layernorm                (B, 1 + P, C)  final layer norm
  classifier                   (B, num_labels) logits (the head)

The Profiling study's ViT-B/16 layers are `VIT_PROFILE_LAYERS`: blocks 0,
3, 6, 9 and the head. A block returns the 1-tuple (hidden_states,), which
capture unwraps to hidden_states; token maps are pooled at the CLS token
(or averaged over tokens with token_pool="mean").

CLIP image tower (`ClipVisionTower`, names as in FlaxCLIPModel):

  vision_model.embeddings          (B, 1 + P, C)
  vision_model.pre_layrnorm        (B, 1 + P, C)  (sic, Hugging Face's name)
  vision_model.encoder.layers.{i}  (B, 1 + P, C)  output of block i
  vision_model.post_layernorm      (B, C)         normed CLS token
  visual_projection                (B, D)         CLIP image embedding

Weights come from a hub id or a local directory (flax_model.msgpack, or
PyTorch model.safetensors converted without torch, or pytorch_model.bin
with torch), or are random ("random") for offline runs. transformers is
imported on first use (hf_loading.transformers_lib), and jax_dissect.models
imports this module only when a Hugging Face target is asked for.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Mapping, TYPE_CHECKING

import flax.linen as nn
import jax.numpy as jnp

from jax_dissect import clip
from jax_dissect.data import preprocess
from jax_dissect.models import convert
from jax_dissect.runtime import hub as hf_loading

if TYPE_CHECKING:
  import transformers

_tf = hf_loading.transformers_lib
from jax_dissect.models import spec as spec_lib

RANDOM_WEIGHTS = spec_lib.RANDOM_WEIGHTS
VIT_B16 = "google/vit-base-patch16-224"
VIT_PROFILE_LAYERS = ("vit.encoder.layer.0", "vit.encoder.layer.3",
                      "vit.encoder.layer.6", "vit.encoder.layer.9",
                      "classifier")

Variables = dict[str, Any]


# ---------------------------------------------------------------------------
# Loading any Hugging Face Flax model.


def _load_error(name: str, err: BaseException | None
                ) -> convert.WeightsLoadError:
  return convert.WeightsLoadError(
      f"cannot load the Hugging Face model {name!r}: "
      f"{hf_loading.reason(err)}. Pass a local directory instead: on a "
      f"machine with network access run <FlaxModelClass>.from_pretrained("
      f"{name!r}).save_pretrained(DIR) (or huggingface-cli download {name} "
      "--local-dir DIR), copy DIR here and use its path as the weights")


def fetch_files(name: str, hub_kwargs: Mapping[str, Any] | None = None
                ) -> tuple[str, str]:
  """(config.json path, weights path) of a hub repo or local directory.

  The weights are flax_model.msgpack if present, else model.safetensors,
  else pytorch_model.bin.

  Raises:
    convert.WeightsLoadError: for a missing directory, an unreachable hub
      (with the advice to pass a local directory) or missing files.
  """
  return hf_loading.fetch_files(
      name, dict(hub_kwargs or {}), error=convert.WeightsLoadError,
      hub_error=lambda e: _load_error(name, e))


def read_params(weights: str, model: Any, name: str = "") -> Any:
  """Reads `model`'s parameters (numpy float32) from a weights file.

  Args:
    weights: flax_model.msgpack, model.safetensors (Flax or PyTorch
      layout) or pytorch_model.bin (needs torch).
    model: a transformers Flax model made with `_do_init=False`.
    name: the model's name, for errors.

  Raises:
    convert.WeightsLoadError: if parameters are missing or misshapen.
  """
  return hf_loading.read_params(weights, model, name or weights,
                                convert.WeightsLoadError)


def random_params(model: Any, seed: int = 0) -> Any:
  """Seeded random parameters for a transformers Flax model (numpy).

  Layer-norm scales 1, biases 0, other weights N(0, 0.02^2) (as CLIP's
  random models in clip.py).
  """
  return hf_loading.random_params(model.params_shape_tree, seed)


def _model_type(config_file: str) -> str:
  with open(config_file, encoding="utf-8") as f:
    return json.load(f).get("model_type", "")


# ---------------------------------------------------------------------------
# ViT.


def _vit_config(random_config: Mapping[str, Any] | None
                ) -> transformers.ViTConfig:
  """ViT-B/16 at 224 pixels with 1000 labels, then `random_config` keys."""
  return _tf().ViTConfig(**{"num_labels": 1000,
                                   **dict(random_config or {})})


def vit_model(config: transformers.ViTConfig, head: bool | None = None):
  """A transformers Flax ViT without parameters (`_do_init=False`).

  Args:
    config: the ViT config.
    head: True for FlaxViTForImageClassification, False for FlaxViTModel;
      None picks from config.architectures (a classifier unless it names
      only "ViTModel"-like architectures).
  """
  if head is None:
    archs = config.architectures or ["ViTForImageClassification"]
    head = any(a.endswith("ForImageClassification") for a in archs)
  cls = (_tf().FlaxViTForImageClassification if head else
         _tf().FlaxViTModel)
  return cls(config, _do_init=False)


def load_vit(weights: str = VIT_B16, seed: int = 0, *,
             random_config: Mapping[str, Any] | None = None,
             head: bool | None = None,
             hub_kwargs: Mapping[str, Any] | None = None
             ) -> tuple[nn.Module, Variables]:
  """Loads a Hugging Face ViT as (linen module, {"params": ...}).

  Args:
    weights: hub id or local directory (save_pretrained of a Flax or
      PyTorch ViT), or "random".
    seed: seed of the random weights.
    random_config: ViTConfig keys for "random" (default: ViTConfig() with
      num_labels=1000, i.e. ViT-B/16 at 224 pixels with a 1000-class head).
    head: see `vit_model`; None decides from the config.
    hub_kwargs: revision, cache_dir, local_files_only for the hub.

  Returns:
    The model's linen module (NHWC input) and its variables.

  Raises:
    convert.WeightsLoadError: if the weights cannot be found or read.
    ValueError: for a config that is not a ViT's.
  """
  if weights == RANDOM_WEIGHTS:
    model = vit_model(_vit_config(random_config),
                      True if head is None else head)
    return model.module, {"params": random_params(model, seed)}
  config_file, weights_file = fetch_files(weights, hub_kwargs)
  if _model_type(config_file) != "vit":
    raise ValueError(f"{weights!r} is a {_model_type(config_file)!r} model, "
                     "not a ViT (config model_type 'vit')")
  model = vit_model(_tf().ViTConfig.from_json_file(config_file), head)
  return model.module, {"params": read_params(weights_file, model, weights)}


def vit_transform(image_size: int = 224) -> preprocess.ImageTransform:
  """ViTImageProcessor's preprocessing: square bilinear resize, mean/std 0.5."""
  return preprocess.ImageTransform(
      resize=image_size, crop=image_size, resample="bilinear",
      mean=preprocess.VIT_MEAN, std=preprocess.VIT_STD, resize_mode="square")


def vit_spec(name: str = "vit_b16", default_weights: str = VIT_B16, *,
             random_config: Mapping[str, Any] | None = None,
             head: bool | None = None) -> spec_lib.ModelSpec:
  """A ModelSpec for a Hugging Face ViT (e.g. for a `module:factory` path).

  Args:
    name: the spec's name.
    default_weights: hub id or local directory used when no weights are
      given.
    random_config: ViTConfig keys of weights="random" models; its
      image_size (default 224) sets the spec's input size and transform.
    head: see `vit_model`.
  """
  image_size = int(dict(random_config or {}).get("image_size", 224))
  num_labels = int(dict(random_config or {}).get("num_labels", 1000))
  loader = functools.partial(load_vit, random_config=random_config,
                             head=head)
  def constructor():
    return vit_model(_vit_config(random_config),
                     True if head is None else head).module

  return spec_lib.ModelSpec(
      name, constructor, default_weights, vit_transform(image_size),
      num_labels, input_size=image_size, loader=loader)


# ---------------------------------------------------------------------------
# CLIP's image tower.


class ClipVisionTower(nn.Module):
  """CLIP's image encoder on NHWC pixels: FlaxCLIPVisionTransformer, then
  the visual projection; returns unnormalised image embeddings (B, D).

  Parameter names are FlaxCLIPModel's ("vision_model", "visual_projection"),
  so a CLIP model's parameters plug in unchanged. With projection_dim=0
  there is no projection (a vision-only FlaxCLIPVisionModel checkpoint) and
  the output is the pooled (B, C) CLS state.

  Attributes:
    config: the CLIP vision config.
    projection_dim: D, CLIP's embedding size; 0 for no projection.
    dtype: computation dtype.
  """
  config: transformers.CLIPVisionConfig
  projection_dim: int = 512
  dtype: Any = jnp.float32

  def setup(self):
    from transformers.models.clip import modeling_flax_clip  # pylint: disable=g-import-not-at-top
    self.vision_model = modeling_flax_clip.FlaxCLIPVisionTransformer(
        self.config, dtype=self.dtype)
    if self.projection_dim:
      self.visual_projection = nn.Dense(self.projection_dim, use_bias=False,
                                        dtype=self.dtype)

  def __call__(self, pixels: jnp.ndarray,
               deterministic: bool = True) -> jnp.ndarray:
    """(B, S, S, 3) normalised pixels -> (B, D) image embeddings."""
    pooled = self.vision_model(pixels, deterministic=deterministic)[1]
    return self.visual_projection(pooled) if self.projection_dim else pooled


def clip_vision_target(embedder: clip.ClipEmbedder
                       ) -> tuple[ClipVisionTower, Variables]:
  """The image tower of a loaded ClipEmbedder as (module, variables).

  Its `visual_projection` layer, L2-normalised, is embedder.embed_pixels.
  """
  config = embedder.config
  module = ClipVisionTower(config.vision_config, int(config.projection_dim))
  params = {k: embedder.params[k] for k in ("vision_model",
                                            "visual_projection")}
  return module, {"params": params}


def load_clip_vision(weights: str = clip.DEFAULT_MODEL, seed: int = 0, *,
                     random_config: Mapping[str, Any] | None = None,
                     hub_kwargs: Mapping[str, Any] | None = None
                     ) -> tuple[ClipVisionTower, Variables]:
  """Loads CLIP's image tower as (module, {"params": ...}).

  Args:
    weights: hub id or local directory of a full CLIP model (the ones
      `ClipEmbedder.from_pretrained` reads; no tokenizer needed) or of a
      vision-only FlaxCLIPVisionModel / CLIPVisionModel (no projection:
      its embedding layer is "vision_model.post_layernorm"), or "random".
    seed: seed of the random weights.
    random_config: CLIPConfig keys for "random" (default: ViT-B/16 CLIP,
      i.e. CLIPConfig() with vision patch_size 16).
    hub_kwargs: revision, cache_dir, local_files_only for the hub.

  Raises:
    convert.WeightsLoadError: if the weights cannot be found or read.
    ValueError: for a config that is not a CLIP model's.
  """
  if weights == RANDOM_WEIGHTS:
    config = _clip_config(random_config)
    model = _tf().FlaxCLIPModel(config, _do_init=False)
    shapes = model.params_shape_tree
    params = hf_loading.random_params(
        {k: shapes[k] for k in ("vision_model", "visual_projection")}, seed)
    return (ClipVisionTower(config.vision_config, int(config.projection_dim)),
            {"params": params})
  config_file, weights_file = fetch_files(weights, hub_kwargs)
  model_type = _model_type(config_file)
  if model_type == "clip_vision_model":
    config = _tf().CLIPVisionConfig.from_json_file(config_file)
    model = _tf().FlaxCLIPVisionModel(config, _do_init=False)
    return (ClipVisionTower(config, projection_dim=0),
            {"params": read_params(weights_file, model, weights)})
  if model_type != "clip":
    raise ValueError(f"{weights!r} is a {model_type!r} model, not a CLIP "
                     "model (config model_type 'clip' or "
                     "'clip_vision_model')")
  config = _tf().CLIPConfig.from_json_file(config_file)
  model = _tf().FlaxCLIPModel(config, _do_init=False)
  params = read_params(weights_file, model, weights)
  module = ClipVisionTower(config.vision_config, int(config.projection_dim))
  return module, {"params": {k: params[k] for k in ("vision_model",
                                                    "visual_projection")}}


def clip_vision_spec(name: str = "clip_vision",
                     default_weights: str = clip.DEFAULT_MODEL, *,
                     random_config: Mapping[str, Any] | None = None
                     ) -> spec_lib.ModelSpec:
  """A ModelSpec for CLIP's image tower (CLIPImageProcessor preprocessing).

  random_config's vision_config.image_size (default 224) sets the input
  size; projection_dim (default 512) the number of "classes" (the
  embedding size).
  """
  overrides = dict(random_config or {})
  image_size = int(overrides.get("vision_config", {}).get("image_size", 224))
  loader = functools.partial(load_clip_vision, random_config=random_config)
  return spec_lib.ModelSpec(
      name, functools.partial(clip_vision_module_random, random_config),
      default_weights, clip.clip_transform(image_size),
      int(overrides.get("projection_dim", 512)), input_size=image_size,
      loader=loader)


def vit_module_random() -> nn.Module:
  """The linen module of ViT-B/16 with a 1000-class head (no weights)."""
  return vit_model(_vit_config(None), head=True).module


def _clip_config(random_config: Mapping[str, Any] | None
                 ) -> transformers.CLIPConfig:
  """CLIPConfig() with vision patch_size 16 (ViT-B/16), then overrides."""
  overrides = dict(random_config or {})
  vision = {"patch_size": 16, **overrides.pop("vision_config", {})}
  return _tf().CLIPConfig(vision_config=vision, **overrides)


def clip_vision_module_random(random_config: Mapping[str, Any] | None = None
                              ) -> ClipVisionTower:
  """CLIP's image tower module for `_clip_config(random_config)`."""
  config = _clip_config(random_config)
  return ClipVisionTower(config.vision_config, int(config.projection_dim))
