"""SigLIP / SigLIP 2 as the backbone of P: the Embedder interface over the
Flax towers of jax_dissect.clip.siglip.model.

`SiglipEmbedder` has the methods of jax_dissect.clip.ClipEmbedder
(jax_dissect.clip.embedder_base.Embedder): images and texts embedded data
parallel over local devices, one padded batch per device per call,
L2-normalised float32 rows, compute_dtype float32 / bfloat16 / float16,
identity() as the cache key. What differs from CLIP:

- texts are padded to the text tower's max_position_embeddings (SigLIP
  was trained so and pools the last position), with the checkpoint's
  tokenizer (SiglipTokenizer, or SigLIP 2's Gemma tokenizer, whose texts
  are lowercased first; see jax_dissect.clip.siglip.load);
- images are resized straight to the square input (no crop) with the
  processor's filter, mean and std.

  siglip = SiglipEmbedder.from_pretrained("google/siglip-base-patch16-224")
  p = concept_matrix.concept_activations(siglip.embed_images(paths),
                                         siglip.embed_texts(concepts))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from jax_dissect.clip import embedder_base
from jax_dissect.clip.siglip import config as config_lib
from jax_dissect.clip.siglip import load
from jax_dissect.clip.siglip import model as model_lib
from jax_dissect.clip.siglip import save
from jax_dissect.data import preprocess
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import hub
from jax_dissect.runtime import precision
from jax_dissect.runtime import xla_cpu


class SiglipEmbedder(embedder_base.Embedder):
  """SigLIP image/text embeddings (L2-normalised float32), data parallel.

  Attributes (besides embedder_base.Embedder's):
    config: the jax_dissect.clip.siglip.config.SiglipConfig.
    lowercase: whether texts are lowercased before the tokenizer.
    logit_scale, logit_bias: SigLIP's sigmoid temperature (log) and bias
      from the checkpoint (None if it has none); P does not use them.
  """

  kind = "SigLIP"

  def __init__(self, siglip: load.Siglip, *,
               devices: data_parallel.Devices = None,
               compute_dtype: str = precision.DEFAULT):
    """Wraps a loaded checkpoint; prefer `from_pretrained` or `random`.

    Args:
      siglip: the checkpoint (jax_dissect.clip.siglip.load.load).
      devices: local devices batches are split over: None or "auto" for
        all, a count, or a list.
      compute_dtype: "float32" (default), "bfloat16" or "float16"; the
        parameters are cast once, softmax and layer-norm statistics stay
        float32, embeddings come back float32.
    """
    self.name = siglip.name
    self.config = siglip.config
    self.model_type = siglip.config.model_type
    self.tokenizer = siglip.tokenizer
    self.transform = siglip.transform
    self.lowercase = bool(siglip.lowercase)
    params = siglip.params
    self.logit_scale = self.logit_bias = None
    if "logit_scale" in params:
      self.logit_scale = float(np.asarray(params["logit_scale"]).reshape(-1)[0])
    if "logit_bias" in params:
      self.logit_bias = float(np.asarray(params["logit_bias"]).reshape(-1)[0])
    self._set_devices({"vision": params["vision"], "text": params["text"]},
                      devices, compute_dtype)
    self.embed_dim = self.config.embed_dim
    self.image_size = self.config.vision.image_size
    self.max_length = self.config.text.max_position_embeddings
    pad = getattr(self.tokenizer, "pad_token_id", None)
    self._pad_id = 0 if pad is None else int(pad)
    self._image_fn = xla_cpu.forward_jit(self._image_features)
    self._text_fn = xla_cpu.forward_jit(self._text_features)

  @classmethod
  def from_pretrained(cls, name_or_path: str | os.PathLike, *,
                      tokenizer: Any = None, lowercase: bool | None = None,
                      revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None,
                      local_files_only: bool = False,
                      devices: data_parallel.Devices = None,
                      compute_dtype: str = precision.DEFAULT
                      ) -> "SiglipEmbedder":
    """Loads a SigLIP / SigLIP 2 checkpoint (hub id or local directory).

    Args:
      name_or_path: hub id or directory (config.json with model_type
        "siglip" or "siglip2", model.safetensors, the tokenizer,
        preprocessor_config.json).
      tokenizer: a tokenizer, or a directory/hub id to load one from.
      lowercase: lowercase texts first (None: as load.default_lowercase).
      revision, cache_dir, local_files_only: for the hub.
      devices, compute_dtype: see the constructor.

    Raises:
      load.SiglipLoadError, config.SiglipConfigError,
      convert.SiglipWeightsError: one-line errors (a missing tokenizer
      names the file it needs).
    """
    precision.check(compute_dtype)
    siglip = load.load(name_or_path, tokenizer=tokenizer, lowercase=lowercase,
                       revision=revision, cache_dir=cache_dir,
                       local_files_only=local_files_only)
    return cls(siglip, devices=devices, compute_dtype=compute_dtype)

  @classmethod
  def random(cls, config: config_lib.SiglipConfig | Mapping[str, Any],
             tokenizer: Any, *, seed: int = 0,
             transform: preprocess.ImageTransform | None = None,
             lowercase: bool | None = None,
             devices: data_parallel.Devices = None,
             compute_dtype: str = precision.DEFAULT) -> "SiglipEmbedder":
    """A SigLIP with seeded random weights (offline tests, smoke runs).

    Args:
      config: the settings, or a config.json dict (load's config.from_dict).
      tokenizer: a transformers tokenizer whose ids fit the vocabulary.
      seed: of the weights (hub.random_params: layer-norm scales 1, biases
        0, other weights N(0, 0.02^2)).
      transform: the preprocessing (default: the processor's defaults).
      lowercase: as in `from_pretrained`.
      devices, compute_dtype: see the constructor.
    """
    if not isinstance(config, config_lib.SiglipConfig):
      config = config_lib.from_dict(config, where="random SigLIP config")
    params = hub.random_params(model_lib.param_shapes(config), seed)
    params = jax.tree_util.tree_map(np.asarray, params)
    if lowercase is None:
      lowercase = load.default_lowercase(tokenizer)
    siglip = load.Siglip(
        name=f"random-{config.model_type}(seed={seed})", config=config,
        params=params, tokenizer=tokenizer,
        transform=transform or load.image_transform(None, config),
        lowercase=lowercase)
    load.check_tokenizer(tokenizer, config, siglip.name)
    return cls(siglip, devices=devices, compute_dtype=compute_dtype)

  def save_pretrained(self, out_dir: str | os.PathLike) -> str:
    """Writes config.json, model.safetensors (SiglipModel's layout), the
    tokenizer and preprocessor_config.json; `from_pretrained` reloads it
    (weights in float32; those of a half-precision embedder as cast)."""
    params = jax.tree_util.tree_map(
        lambda x: np.asarray(jax.device_get(x), np.float32), self.params)
    extra = {}
    if self.logit_scale is not None:
      extra["logit_scale"] = np.float32([self.logit_scale])
    if self.logit_bias is not None:
      extra["logit_bias"] = np.float32([self.logit_bias])
    return save.save_pretrained(out_dir, self.config, {**params, **extra},
                                self.tokenizer, self.transform)

  # -- the Embedder hooks ---------------------------------------------------

  def _identity_parts(self) -> dict[str, Any]:
    return {"model_type": self.model_type,
            "config": dataclasses.asdict(self.config),
            "max_length": self.max_length, "lowercase": self.lowercase,
            "tokenizer_class": type(self.tokenizer).__name__,
            "do_lower_case": getattr(self.tokenizer, "do_lower_case", None),
            "transform": self.transform.identity(),
            "compute_dtype": self.compute_dtype}

  def _image_features(self, params, pixels: jax.Array) -> jax.Array:
    return embedder_base.l2_normalize(model_lib.image_embeds(
        params, pixels, config=self.config,
        compute_dtype=self.compute_dtype))

  def _text_features(self, params, ids: jax.Array) -> jax.Array:
    return embedder_base.l2_normalize(model_lib.text_embeds(
        params, ids, config=self.config, compute_dtype=self.compute_dtype))

  def tokenize(self, texts: Sequence[str]
               ) -> tuple[list[list[int]], list[int]]:
    """Token ids per text, padded to `max_length` as SigLIP was trained.

    Returns:
      (ids, truncated): ids[m] has max_length ids (the end token kept when
      truncated); truncated lists the texts that had more tokens.
    """
    self._check_texts(texts)
    ids = load.tokenize(self.tokenizer, texts, self.max_length,
                        self.lowercase)
    # A row can have been cut only if its second-to-last id is not padding
    # (with padding equal to the end token, as in SigLIP's tokenizer, a
    # text one token short of max_length ends "..., end, end"); the
    # candidates are tokenized again, uncut, to count their tokens.
    candidates = ([m for m in range(len(ids)) if ids[m, -2] != self._pad_id]
                  if self.max_length > 1 else [])
    truncated = []
    if candidates:
      again = [texts[m].lower() if self.lowercase else texts[m]
               for m in candidates]
      uncut = self.tokenizer(again, truncation=False,
                             verbose=False)["input_ids"]
      truncated = [m for m, seq in zip(candidates, uncut)
                   if len(seq) > self.max_length]
    return ids.tolist(), truncated

  def _text_batch(self, rows: Sequence[int], ids: Sequence[Sequence[int]],
                  batch_size: int) -> tuple[np.ndarray]:
    """(batch_size, max_length) int32 ids; padding rows are pad tokens."""
    batch = np.full((batch_size, self.max_length), self._pad_id, np.int32)
    for row, r in enumerate(rows):
      batch[row] = ids[r]
    return (batch,)
