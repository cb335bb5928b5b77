"""Loading CLIP models and tokenizers: hub ids, local directories, random.

Weights come from a hub id or a local directory (Flax weights, or PyTorch
weights converted with transformers' PyTorch-to-Flax converter), or are
random (offline smoke runs). transformers is imported on first use.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, TYPE_CHECKING

from jax_dissect.runtime import hub

if TYPE_CHECKING:
  import transformers

DEFAULT_MODEL = "openai/clip-vit-base-patch16"

_SUB_CONFIGS = {"text_config": "CLIPTextConfig",
                "vision_config": "CLIPVisionConfig"}


class ClipLoadError(OSError):
  """A CLIP model or tokenizer could not be loaded."""


def hub_error(name: str, what: str, err: BaseException | None
               ) -> ClipLoadError:
  return ClipLoadError(
      f"cannot load the CLIP {what} {name!r}: {hub.reason(err)}. Pass "
      f"a local directory instead: on a machine with network access run "
      f"FlaxCLIPModel.from_pretrained({name!r}).save_pretrained(DIR) and "
      f"CLIPTokenizerFast.from_pretrained({name!r}).save_pretrained(DIR), "
      "copy DIR here and use its path as the model name.")


def load_model(name: str, hub_kwargs: Mapping[str, Any]) -> tuple[Any, Any]:
  """Returns (FlaxCLIPModel without params, params) from a dir or hub id.

  Reads flax_model.msgpack if present, else model.safetensors (PyTorch or
  Flax layout), else pytorch_model.bin (needs torch), converting PyTorch
  weights with transformers' converter.
  """
  config_file, weights = hub.fetch_files(
      name, hub_kwargs, error=ClipLoadError, what="CLIP",
      hub_error=lambda e: hub_error(name, "model", e))
  config = hub.transformers_lib().CLIPConfig.from_json_file(config_file)
  model = hub.transformers_lib().FlaxCLIPModel(config, _do_init=False)
  return model, hub.read_params(weights, model, name, ClipLoadError)


def load_tokenizer(name: str, **hub_kwargs) -> transformers.CLIPTokenizerFast:
  try:
    return hub.transformers_lib().CLIPTokenizerFast.from_pretrained(
        name, **hub_kwargs)
  except (OSError, ValueError, TypeError) as e:
    if os.path.isdir(name):
      raise ClipLoadError(
          f"cannot load a CLIP tokenizer from directory {name!r} ({e}); save "
          "one there with CLIPTokenizerFast.save_pretrained, or build one "
          "with jax_dissect.clip.build_clip_tokenizer and pass it as "
          "tokenizer=") from e
    raise hub_error(name, "tokenizer", e) from e


def check_config_overrides(overrides: Mapping[str, Any] | None
                           ) -> dict[str, Any]:
  """Validates `random()`'s overrides against CLIPConfig's keys."""
  overrides = dict(overrides or {})
  allowed = set(hub.transformers_lib().CLIPConfig().to_dict())
  for key, value in overrides.items():
    if key not in allowed:
      raise ValueError(f"unknown CLIPConfig key {key!r}; allowed: "
                       f"{sorted(_SUB_CONFIGS)} and top-level keys such as "
                       "'projection_dim'")
    if key in _SUB_CONFIGS:
      sub_config = getattr(hub.transformers_lib(), _SUB_CONFIGS[key])
      sub_allowed = set(sub_config().to_dict())
      for sub_key in value:
        if sub_key not in sub_allowed:
          raise ValueError(f"unknown {key} key {sub_key!r}; allowed: "
                           f"{sorted(sub_allowed)}")
  return overrides
