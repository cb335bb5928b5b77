"""Loading CLIP models and tokenizers: hub ids, local directories, random;
and which architecture a checkpoint is (`read_model_type`).

Weights come from a hub id or a local directory (Flax weights, or PyTorch
weights converted with transformers' PyTorch-to-Flax converter), or are
random (offline smoke runs). transformers is imported on first use.
OpenCLIP checkpoints published in Hugging Face CLIP format (model_type
"clip", other widths, activations and layer-norm epsilons) load here like
OpenAI's: the FlaxCLIPModel is built from their config.json.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping, TYPE_CHECKING

import huggingface_hub

from jax_dissect.runtime import hub

if TYPE_CHECKING:
  import transformers

DEFAULT_MODEL = "openai/clip-vit-base-patch16"

_SUB_CONFIGS = {"text_config": "CLIPTextConfig",
                "vision_config": "CLIPVisionConfig"}
# config.json model_type values of the backbones P can come from
# (jax_dissect.clip.load_backbone): CLIP (OpenAI's, and OpenCLIP checkpoints
# in Hugging Face CLIP format), SigLIP (and the fixed-resolution SigLIP 2
# checkpoints), SigLIP 2 NaFlex (at its square grid).
MODEL_TYPES = ("clip", "siglip", "siglip2")
# Files CLIPTokenizerFast reads: tokenizer.json, or vocab.json + merges.txt.
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


class ClipLoadError(OSError):
  """A CLIP model or tokenizer could not be loaded."""


def _where(name: str) -> str:
  return (f"local directory {name!r}" if os.path.isdir(name)
          else f"hub repo {name!r}")


def read_config_json(name: str, hub_kwargs: Mapping[str, Any]
                     ) -> tuple[str, dict[str, Any]]:
  """(path, contents) of a checkpoint's config.json (dir or hub id).

  Raises:
    ClipLoadError: (one line) no such directory, no config.json, not a
      JSON object, or an unreachable hub.
  """
  if not os.path.isdir(name) and hub.looks_like_path(name):
    raise ClipLoadError(f"local model directory {name!r} does not exist")
  try:
    path = hub.fetch(name, "config.json", hub_kwargs)
  except (OSError, ValueError, huggingface_hub.errors.HfHubHTTPError) as e:
    raise ClipLoadError(
        f"cannot read the config.json of {_where(name)}: {hub.reason(e)}; "
        "pass a local directory (save_pretrained of the model, its "
        "tokenizer and processor)"[:300]) from e
  if path is None:
    raise ClipLoadError(f"{_where(name)} has no config.json")
  return path, _read_json_file(path)


def _read_json_file(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      values = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ClipLoadError(f"cannot read {path!r}: {e}"[:300]) from e
  if not isinstance(values, dict):
    raise ClipLoadError(f"{path!r} is not a JSON object")
  return values


def check_model_type(model_type: Any, where: str) -> str:
  """`model_type` if supported, else a one-line ClipLoadError naming the
  supported architectures."""
  if model_type not in MODEL_TYPES:
    raise ClipLoadError(
        f"unsupported architecture model_type={model_type!r} (supported: "
        f"{', '.join(MODEL_TYPES)}: CLIP and OpenCLIP in Hugging Face CLIP "
        f"format, SigLIP, SigLIP 2) in {where}"[:300])
  return model_type


def read_model_type(name: str, hub_kwargs: Mapping[str, Any] | None = None
                    ) -> str:
  """The architecture of a checkpoint: config.json's model_type, one of
  MODEL_TYPES (else a one-line ClipLoadError naming them)."""
  path, values = read_config_json(name, hub_kwargs or {})
  return check_model_type(values.get("model_type"), path)


def check_tokenizer_files(name: str) -> None:
  """A local CLIP directory holds CLIPTokenizerFast's files, else one line
  naming them (hub repos are left to the loader)."""
  if not os.path.isdir(name):
    return
  if not any(all(os.path.isfile(os.path.join(name, f)) for f in group)
             for group in TOKENIZER_FILES):
    raise ClipLoadError(
        f"local CLIP directory {name!r} has no tokenizer: expected "
        "tokenizer.json (or vocab.json and merges.txt), e.g. from "
        "CLIPTokenizerFast.save_pretrained or clip.build_clip_tokenizer")


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
  values = _read_json_file(config_file)
  if values.get("model_type") != "clip":
    check_model_type(values.get("model_type"), config_file)
    raise ClipLoadError(
        f"{config_file} is a {values['model_type']} checkpoint, not CLIP; "
        "load it with jax_dissect.clip.load_backbone (or load_embedder)")
  config = hub.transformers_lib().CLIPConfig.from_json_file(config_file)
  model = hub.transformers_lib().FlaxCLIPModel(config, _do_init=False)
  return model, hub.read_params(weights, model, name, ClipLoadError)


def load_tokenizer(name: str, **hub_kwargs) -> transformers.CLIPTokenizerFast:
  check_tokenizer_files(name)
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
