"""Loading a SigLIP / SigLIP 2 checkpoint: weights, tokenizer, preprocessing.

A checkpoint is a hub id or a local directory (as save_pretrained writes
it) holding:

- config.json: model_type "siglip" or "siglip2" (jax_dissect.clip.siglip.config);
- model.safetensors (or model.safetensors.index.json and its shards), read
  with safetensors' numpy API, so torch is not needed;
- the tokenizer, loaded with transformers' AutoTokenizer: SigLIP's
  SiglipTokenizer (SentencePiece, spiece.model) or SigLIP 2's Gemma
  tokenizer (tokenizer.json / tokenizer.model);
- preprocessor_config.json: resize straight to the square input size (no
  crop) with its resample filter, rescale, mean and std, expressed as a
  jax_dissect.preprocess.ImageTransform.

Texts are padded to the text tower's max_position_embeddings
("max_length" padding, as SigLIP was trained; the tower pools the last
position). SiglipTokenizer lowercases (and strips punctuation) itself;
SigLIP 2 was trained on lowercased text but its checkpoints ship a Gemma
tokenizer that does not lowercase, so texts are lowercased here first
(`lowercase=None` picks this per tokenizer; True/False force it).

  siglip = load.load("google/siglip-base-patch16-224")
  pixels = np.stack([siglip.transform(img) for img in images])  # (N,S,S,3)
  p = model.cosine(siglip.image_embeds(pixels),
                   siglip.text_embeds(siglip.tokenize(texts)))  # (N, M)
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping, Sequence

from absl import logging
import huggingface_hub
import numpy as np
import safetensors.numpy

from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import convert
from jax_dissect.clip.siglip import model as model_lib
from jax_dissect.data import preprocess
from jax_dissect.runtime import hub as hf_loading

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
PREPROCESSOR = "preprocessor_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
# The file(s) each tokenizer class reads (any one of them suffices).
TOKENIZER_FILES = {
    "SiglipTokenizer": ("spiece.model",),
    "GemmaTokenizer": ("tokenizer.model", "tokenizer.json"),
    "GemmaTokenizerFast": ("tokenizer.json", "tokenizer.model"),
}
# AutoTokenizer's class for a model_type without tokenizer_config.json.
_DEFAULT_TOKENIZER = {"siglip": "SiglipTokenizer",
                      "siglip2": "GemmaTokenizerFast"}
# PIL filter codes preprocessor_config.json uses -> preprocess.RESAMPLE.
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}
# SiglipImageProcessor's / Siglip2ImageProcessor's default filters.
_DEFAULT_RESAMPLE = {"siglip": 3, "siglip2": 2}


class SiglipLoadError(OSError):
  """A SigLIP checkpoint, tokenizer or preprocessing could not be loaded."""


def _where(name: str) -> str:
  return (f"local SigLIP directory {name!r}" if os.path.isdir(name)
          else f"hub repo {name!r}")


def _hub_error(name: str, err: BaseException | None) -> SiglipLoadError:
  return SiglipLoadError(
      f"cannot load SigLIP {name!r}: {hf_loading.reason(err)}; pass a local "
      "directory (save_pretrained of the model and its processor)"[:300])


def _fetch(name: str, filename: str, hub_kwargs: Mapping[str, Any]
           ) -> str | None:
  """Path of `filename` in the directory or hub repo, None if absent."""
  try:
    return hf_loading.fetch(name, filename, hub_kwargs)
  except (OSError, ValueError, huggingface_hub.errors.HfHubHTTPError) as e:
    raise _hub_error(name, e) from e


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      values = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise SiglipLoadError(f"cannot read {path!r}: {e}") from e
  if not isinstance(values, dict):
    raise SiglipLoadError(f"{path!r} is not a JSON object")
  return values


def read_config(name: str, hub_kwargs: Mapping[str, Any] | None = None
                ) -> config_lib.SiglipConfig:
  """The checkpoint's settings from its config.json.

  Raises:
    SiglipLoadError: no such directory or no config.json.
    config_lib.SiglipConfigError: another model_type (one line naming the
      supported ones) or settings this model cannot run.
  """
  if not os.path.isdir(name) and hf_loading.looks_like_path(name):
    raise SiglipLoadError(f"local SigLIP directory {name!r} does not exist")
  path = _fetch(name, "config.json", hub_kwargs or {})
  if path is None:
    raise SiglipLoadError(f"{_where(name)} has no config.json")
  return config_lib.read(path)


def read_safetensors(paths: Sequence[str]) -> dict[str, np.ndarray]:
  """name -> float32 array from safetensors files (numpy API, no torch)."""
  state = {}
  for path in paths:
    for key, value in safetensors.numpy.load_file(path).items():
      state[key] = np.asarray(value, np.float32)
  return state


def read_state_dict(name: str, hub_kwargs: Mapping[str, Any] | None = None
                    ) -> dict[str, np.ndarray]:
  """The checkpoint's PyTorch state dict from model.safetensors (or shards).

  Raises:
    SiglipLoadError: (one line) if there is no safetensors file.
  """
  hub_kwargs = hub_kwargs or {}
  single = _fetch(name, WEIGHTS, hub_kwargs)
  if single:
    return read_safetensors([single])
  index = _fetch(name, WEIGHTS_INDEX, hub_kwargs)
  if index is None:
    raise SiglipLoadError(
        f"{_where(name)} has no {WEIGHTS} (nor {WEIGHTS_INDEX}); SigLIP "
        "weights are read from safetensors only (save_pretrained with "
        "safe_serialization=True)")
  shards = sorted(set(_read_json(index).get("weight_map", {}).values()))
  paths = []
  for shard in shards:
    path = _fetch(name, shard, hub_kwargs)
    if path is None:
      raise SiglipLoadError(f"{_where(name)} lacks {shard!r}, a shard that "
                            f"{WEIGHTS_INDEX} lists")
    paths.append(path)
  return read_safetensors(paths)


def _tokenizer_class(name: str, model_type: str,
                     hub_kwargs: Mapping[str, Any]) -> str:
  path = _fetch(name, TOKENIZER_CONFIG, hub_kwargs)
  if path is not None:
    found = _read_json(path).get("tokenizer_class")
    if found:
      return str(found)
  return _DEFAULT_TOKENIZER[model_type]


def check_tokenizer_files(name: str, model_type: str = "siglip",
                          hub_kwargs: Mapping[str, Any] | None = None) -> str:
  """The checkpoint's tokenizer class, once its file is found.

  Raises:
    SiglipLoadError: one line naming the file(s) the tokenizer class
      (tokenizer_config.json's, else the model_type's default) needs, when
      none is there.
  """
  hub_kwargs = dict(hub_kwargs or {})
  cls = _tokenizer_class(name, model_type, hub_kwargs)
  expected = TOKENIZER_FILES.get(cls)
  if expected and not any(_fetch(name, f, hub_kwargs) for f in expected):
    raise SiglipLoadError(
        f"{_where(name)} has no tokenizer: {cls} needs "
        f"{' or '.join(expected)}")
  return cls


def load_tokenizer(name: str, model_type: str = "siglip",
                   hub_kwargs: Mapping[str, Any] | None = None) -> Any:
  """The checkpoint's tokenizer (transformers' AutoTokenizer).

  Args:
    name: hub id or local directory.
    model_type: the checkpoint's model_type; picks the tokenizer class when
      there is no tokenizer_config.json.
    hub_kwargs: revision, cache_dir, local_files_only for the hub.

  Raises:
    SiglipLoadError: one line naming the expected file when the tokenizer
      file is missing, or saying why AutoTokenizer failed.
  """
  hub_kwargs = dict(hub_kwargs or {})
  cls = check_tokenizer_files(name, model_type, hub_kwargs)
  try:
    tokenizer = hf_loading.transformers_lib().AutoTokenizer.from_pretrained(
        name, **hub_kwargs)
  except (OSError, ValueError, TypeError, ImportError, AttributeError) as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise SiglipLoadError(
        f"cannot load the tokenizer ({cls}) of {_where(name)}: "
        f"{type(e).__name__}: {message}"[:300]) from e
  return tokenizer


def default_lowercase(tokenizer: Any) -> bool:
  """Whether texts are lowercased before `tokenizer` by default.

  True for a Gemma tokenizer (SigLIP 2's checkpoints ship one that keeps
  case, while SigLIP 2 was trained on lowercased text); False otherwise:
  SiglipTokenizer lowercases itself (its do_lower_case), and other
  tokenizers are used as the checkpoint configures them.
  """
  return type(tokenizer).__name__.startswith("Gemma")


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int,
             lowercase: bool = False) -> np.ndarray:
  """Token ids (M, max_length) int32, padded to max_length as SigLIP.

  Args:
    tokenizer: a transformers tokenizer.
    texts: the M texts.
    max_length: the text tower's max_position_embeddings; longer texts are
      truncated (keeping the end token).
    lowercase: lowercase the texts before the tokenizer sees them.
  """
  texts = [t.lower() for t in texts] if lowercase else list(texts)
  if not texts:
    return np.zeros((0, max_length), np.int32)
  ids = tokenizer(texts, padding="max_length", max_length=max_length,
                  truncation=True, return_attention_mask=False)["input_ids"]
  return np.asarray(ids, np.int32)


def image_transform(values: Mapping[str, Any] | None,
                    cfg: config_lib.SiglipConfig, *,
                    where: str = PREPROCESSOR) -> preprocess.ImageTransform:
  """ImageTransform of a preprocessor_config.json (SiglipImageProcessor).

  Resize straight to (S, S) with its resample filter (no crop), then
  x * rescale_factor, then (x - mean) / std; rescale_factor is folded into
  mean and std (ImageTransform divides by 255). Without a file (None), the
  processor's defaults: bicubic ("siglip") or bilinear ("siglip2"), 1/255,
  mean = std = 0.5. For "siglip2" (NaFlex) the size is the config's square
  grid; Siglip2ImageProcessor gives the same for square images, while it
  keeps the aspect ratio of others (a patch grid per image), which this
  fixed-resolution model does not do.

  Raises:
    SiglipLoadError: (one line) a size other than the model's square input,
      do_resize false, or a resample filter ImageTransform lacks.
  """
  values = dict(values or {})
  side = cfg.vision.image_size
  if values.get("do_resize", True) is False:
    raise SiglipLoadError(f"{where} has do_resize=false; the model needs "
                          f"{side}x{side} inputs")
  if cfg.model_type == "siglip" and "size" in values:
    size = values["size"] or {}
    hw = (size.get("height"), size.get("width"))
    if hw != (side, side):
      raise SiglipLoadError(
          f"{where} has size={size}; the model takes {side}x{side} images "
          "(height and width), without position-embedding interpolation")
  code = values.get("resample", _DEFAULT_RESAMPLE[cfg.model_type])
  if code not in _PIL_RESAMPLE:
    raise SiglipLoadError(
        f"{where} has resample={code!r}; supported PIL filters: "
        f"{', '.join(f'{k} ({v})' for k, v in _PIL_RESAMPLE.items())}")
  rescale = (float(values.get("rescale_factor", 1 / 255))
             if values.get("do_rescale", True) else 1.0)
  if values.get("do_normalize", True):
    mean = np.asarray(values.get("image_mean", (0.5, 0.5, 0.5)), np.float64)
    std = np.asarray(values.get("image_std", (0.5, 0.5, 0.5)), np.float64)
  else:
    mean, std = np.zeros(3), np.ones(3)
  mean, std = np.broadcast_to(mean, (3,)), np.broadcast_to(std, (3,))
  # (x r - m) / s == (x / 255 - m / (255 r)) / (s / (255 r)).
  unit = 255.0 * rescale
  if abs(unit - 1.0) > 1e-12:
    mean, std = mean / unit, std / unit
  return preprocess.ImageTransform(
      resize=side, crop=side, resample=_PIL_RESAMPLE[code],
      mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std),
      resize_mode="square")


@dataclasses.dataclass
class Siglip:
  """A loaded SigLIP: settings, parameters, tokenizer and preprocessing.

  Attributes:
    name: hub id or directory it came from.
    config: the settings.
    params: float32 numpy parameter tree (see jax_dissect.clip.siglip.model).
    tokenizer: the transformers tokenizer.
    transform: PIL image / uint8 array -> (S, S, 3) float32.
    lowercase: whether texts are lowercased before the tokenizer.
    compute_dtype: "float32", "bfloat16" or "float16" for both towers.
  """
  name: str
  config: config_lib.SiglipConfig
  params: Any
  tokenizer: Any
  transform: preprocess.ImageTransform
  lowercase: bool = False
  compute_dtype: str = "float32"

  def __post_init__(self):
    model_lib.compute_dtype_of(self.compute_dtype)

  @property
  def max_length(self) -> int:
    """Tokens per text (the text tower's max_position_embeddings)."""
    return self.config.text.max_position_embeddings

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """(M, max_length) int32 token ids."""
    return tokenize(self.tokenizer, texts, self.max_length, self.lowercase)

  def image_embeds(self, pixels: np.ndarray) -> np.ndarray:
    """(B, S, S, 3) preprocessed pixels -> (B, D) float32, not normalised."""
    return np.asarray(model_lib.image_embeds(
        self.params, pixels, config=self.config,
        compute_dtype=self.compute_dtype))

  def text_embeds(self, input_ids: np.ndarray) -> np.ndarray:
    """(M, L) token ids -> (M, D) float32, not normalised."""
    return np.asarray(model_lib.text_embeds(
        self.params, input_ids, config=self.config,
        compute_dtype=self.compute_dtype))


def check_tokenizer(tokenizer: Any, cfg: config_lib.SiglipConfig,
                    name: str) -> None:
  """One-line SiglipLoadError if the tokenizer's ids exceed the vocabulary."""
  top = max(tokenizer.get_vocab().values())
  if top >= cfg.text.vocab_size:
    raise SiglipLoadError(
        f"the tokenizer of {name!r} has token ids up to {top} but the text "
        f"tower's vocab_size is {cfg.text.vocab_size}")


def load(name: str | os.PathLike, *, tokenizer: Any = None,
         lowercase: bool | None = None, compute_dtype: str = "float32",
         revision: str | None = None,
         cache_dir: str | os.PathLike | None = None,
         local_files_only: bool = False) -> Siglip:
  """Loads a SigLIP / SigLIP 2 checkpoint from a directory or the hub.

  Args:
    name: hub id or local directory.
    tokenizer: a tokenizer or directory/hub id to load one from (default:
      the checkpoint's).
    lowercase: lowercase texts before tokenizing; None: `default_lowercase`
      (yes for SigLIP 2's Gemma tokenizer; SiglipTokenizer lowercases
      itself).
    compute_dtype: "float32", "bfloat16" or "float16".
    revision, cache_dir, local_files_only: for the hub.

  Raises:
    SiglipLoadError, config_lib.SiglipConfigError,
    convert.SiglipWeightsError: one-line errors, raised before the weights
    are read where the problem is in the config, tokenizer or
    preprocessing.
  """
  model_lib.compute_dtype_of(compute_dtype)
  name = os.fspath(name)
  hub_kwargs = {"revision": revision, "cache_dir": cache_dir,
                "local_files_only": local_files_only}
  cfg = read_config(name, hub_kwargs)
  if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
    tokenizer = load_tokenizer(os.fspath(tokenizer or name), cfg.model_type,
                               hub_kwargs)
  check_tokenizer(tokenizer, cfg, name)
  pre_path = _fetch(name, PREPROCESSOR, hub_kwargs)
  if pre_path is None:
    logging.warning("%s has no %s; using the image processor's defaults",
                    name, PREPROCESSOR)
  transform = image_transform(
      None if pre_path is None else _read_json(pre_path), cfg,
      where=pre_path or PREPROCESSOR)
  params = convert.convert_state_dict(read_state_dict(name, hub_kwargs), cfg)
  for part in ("vision", "text"):
    if part not in params:
      raise SiglipLoadError(f"{_where(name)} has no {part} tower weights")
  if lowercase is None:
    lowercase = default_lowercase(tokenizer)
  return Siglip(name=name, config=cfg, params=params, tokenizer=tokenizer,
                transform=transform, lowercase=lowercase,
                compute_dtype=compute_dtype)
