"""CLIP image and text embeddings with FlaxCLIPModel, and the run's backbone.

`ClipEmbedder` wraps a Hugging Face FlaxCLIPModel, its parameters and a
CLIPTokenizerFast (the shared machinery, data parallel over local devices,
is jax_dissect.clip.embedder_base.Embedder):

  clip = ClipEmbedder.from_pretrained("openai/clip-vit-base-patch16")
  image_emb = clip.embed_images(paths)           # (N, D) float32, unit norm
  text_emb = clip.embed_texts(concept_set.texts())  # (M, D)
  p = concept_matrix.concept_activations(image_emb, text_emb)   # (N, M)

`load_backbone` loads a CLIP or a SigLIP / SigLIP 2 checkpoint by its
config.json's model_type (jax_dissect.clip.loading.read_model_type):
"clip" (OpenAI's, and OpenCLIP checkpoints published in Hugging Face CLIP
format, any widths and activation) -> ClipEmbedder; "siglip" / "siglip2" ->
jax_dissect.clip.siglip.embedder.SiglipEmbedder; both have the Embedder
interface. `load_embedder` builds the backbone a run's options name (hub
id, local directory or a random CLIP). Nothing here needs torch (except
reading a pytorch_model.bin); the command-line entry points set USE_TORCH=0
before transformers is imported unless a command needs PyTorch.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from typing import Any, Mapping, Sequence, TYPE_CHECKING

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jax_dissect.clip import embedder_base
from jax_dissect.clip import loading
from jax_dissect.clip import tokenizer as tokenizer_lib
from jax_dissect.clip.siglip import embedder as siglip_embedder
from jax_dissect.clip.siglip import load as siglip_load
from jax_dissect.data import preprocess
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import hub
from jax_dissect.runtime import precision
from jax_dissect.runtime import xla_cpu

if TYPE_CHECKING:
  import transformers

DEFAULT_MODEL = loading.DEFAULT_MODEL
Embedder = embedder_base.Embedder


def load_backbone(name: str | os.PathLike, *,
                  tokenizer: Any = None, revision: str | None = None,
                  cache_dir: str | os.PathLike | None = None,
                  local_files_only: bool = False,
                  devices: data_parallel.Devices = None,
                  compute_dtype: str = precision.DEFAULT) -> Embedder:
  """A CLIP or SigLIP checkpoint as an Embedder, by its config.json.

  Args:
    name: hub id or local directory (save_pretrained of the model and its
      tokenizer / processor).
    tokenizer: a tokenizer, or a directory/hub id to load one from; None
      loads the checkpoint's own.
    revision, cache_dir, local_files_only: for the hub.
    devices, compute_dtype: see ClipEmbedder / SiglipEmbedder.

  Raises:
    ClipLoadError: (one line) no such directory, no config.json, an
      unreachable hub, or a model_type other than clip, siglip, siglip2
      (naming those); and the loaders' one-line errors (a missing
      tokenizer names the file it needs).
  """
  name = os.fspath(name)
  hub_kwargs = {"revision": revision, "cache_dir": cache_dir,
                "local_files_only": local_files_only}
  model_type = loading.read_model_type(name, hub_kwargs)
  kwargs = {"tokenizer": tokenizer, **hub_kwargs, "devices": devices,
            "compute_dtype": compute_dtype}
  if model_type == "clip":
    return ClipEmbedder.from_pretrained(name, **kwargs)
  return siglip_embedder.SiglipEmbedder.from_pretrained(name, **kwargs)


def check_backbone(name: str | os.PathLike,
                   hub_kwargs: Mapping[str, Any] | None = None) -> str:
  """A checkpoint's model_type, checked before its weights are read: a
  supported architecture and, in a local directory, the tokenizer's files.

  Raises:
    ClipLoadError / siglip load.SiglipLoadError: one line (the supported
      architectures, or the tokenizer file expected).
  """
  name = os.fspath(name)
  model_type = loading.read_model_type(name, hub_kwargs)
  if os.path.isdir(name):
    if model_type == "clip":
      loading.check_tokenizer_files(name)
    else:
      siglip_load.check_tokenizer_files(name, model_type)
  return model_type


def load_embedder(model: str = DEFAULT_MODEL, *, seed: int = 0,
                  tokenizer: str | os.PathLike = "",
                  config_overrides: Mapping[str, Any] | None = None,
                  work_dir: str | os.PathLike | None = None,
                  devices: data_parallel.Devices = None,
                  compute_dtype: str = precision.DEFAULT) -> Embedder:
  """The backbone a run's options name (describe_neurons' clip_* options).

  Args:
    model: a hub id or local directory of a CLIP or SigLIP / SigLIP 2
      checkpoint (the architecture comes from its config.json), or
      "random" for a seeded random CLIP (offline smoke runs).
    seed: seed of the random weights (model="random").
    tokenizer: for model="random": a saved tokenizer directory, or OpenAI's
      bpe_simple_vocab_16e6.txt.gz (built once into `work_dir`).
    config_overrides: CLIPConfig overrides (model="random").
    work_dir: where a tokenizer built from a BPE file is kept (default: a
      temporary directory).
    devices: local devices each batch is split over ("auto" = all).
    compute_dtype: "float32", "bfloat16" or "float16" for both towers.

  Returns:
    The ClipEmbedder or SiglipEmbedder.
  """
  kwargs = {"devices": devices, "compute_dtype": compute_dtype}
  if model != "random":
    return load_backbone(model, **kwargs)
  tokenizer = os.fspath(tokenizer)
  if not tokenizer:
    raise ValueError("clip_model='random' needs clip_tokenizer: a saved CLIP "
                     "tokenizer directory or OpenAI's bpe_simple_vocab_16e6."
                     "txt.gz")
  if not os.path.exists(tokenizer):
    raise FileNotFoundError(f"clip_tokenizer {tokenizer!r} does not exist")
  if os.path.isfile(tokenizer):
    tokenizer = tokenizer_lib.tokenizer_dir_from_bpe(
        tokenizer, work_dir or tempfile.mkdtemp(prefix="jax_dissect-"))
  return ClipEmbedder.random(config_overrides, seed=seed,
                             tokenizer_dir=tokenizer, **kwargs)


def load_run_embedder(run_config: Mapping[str, Any]) -> Embedder:
  """The backbone a describe_neurons run used, rebuilt from its config.json.

  Hub ids, local directories (CLIP or SigLIP) and random CLIPs (same
  config, seed and tokenizer) alike, in the run's compute dtype, so new
  embeddings land in the same space as the run's cached ones. A tokenizer
  built from a BPE file is kept in the run's activation_dir when that
  directory exists.

  Args:
    run_config: the run's options (results.Run.config): clip_model,
      clip_seed, clip_tokenizer, clip_config, compute_dtype (float32 for
      runs before the option), activation_dir.
  """
  work_dir = run_config.get("activation_dir")
  if not work_dir or not os.path.isdir(work_dir):
    work_dir = None
  return load_embedder(
      run_config.get("clip_model") or DEFAULT_MODEL,
      seed=int(run_config.get("clip_seed", 0)),
      tokenizer=run_config.get("clip_tokenizer") or "",
      config_overrides=run_config.get("clip_config") or {}, work_dir=work_dir,
      compute_dtype=run_config.get("compute_dtype") or precision.DEFAULT)


# ---------------------------------------------------------------------------
# CLIP.


def clip_transform(image_size: int) -> preprocess.ImageTransform:
  """CLIPImageProcessor's preprocessing for `image_size` (CLIP_EVAL at 224):
  resize the short side to image_size (bicubic), floor-rounded center crop
  of image_size, CLIP mean/std."""
  return dataclasses.replace(preprocess.CLIP_EVAL, resize=image_size,
                             crop=image_size)


def _length_bucket(length: int, max_length: int) -> int:
  """Padded length of a batch whose longest text has `length` tokens.

  Exact up to 16 tokens (concepts are short: 3-7 tokens for 20k.txt), then
  multiples of 16, at most max_length; so few shapes are compiled.
  """
  if length <= 16:
    return min(length, max_length)
  return min(-(-length // 16) * 16, max_length)


class ClipEmbedder(embedder_base.Embedder):
  """CLIP image/text embeddings (L2-normalised float32) with FlaxCLIPModel.

  Batches of images or texts run data parallel over the embedder's local
  devices (the parameters are replicated on every device once; each call
  computes one batch per device, padded to the batch size, so embeddings
  are the same bit for bit on any number of devices). With compute_dtype
  bfloat16 or float16 the towers run in that dtype (parameters cast once);
  embeddings are float32 either way. Texts are padded per batch to a
  length bucket (`_length_bucket`) with an attention mask.

  Attributes (besides embedder_base.Embedder's):
    model: the transformers FlaxCLIPModel (its params are held separately),
      computing in `compute_dtype`.
    transform: image preprocessing (CLIP_EVAL at the config's image size).
    embed_dim: config.projection_dim.
    max_length: tokens per text, special tokens included (77 for CLIP).
  """

  model_type = "clip"
  kind = "CLIP"

  def __init__(self, model: Any, params: Any,
               tokenizer: transformers.PreTrainedTokenizerBase, name: str,
               *, devices: data_parallel.Devices = None,
               compute_dtype: str = precision.DEFAULT):
    """Wraps a loaded model; prefer `from_pretrained` or `random`.

    Args:
      model: a FlaxCLIPModel (built with _do_init=False or not).
      params: its parameters.
      tokenizer: the tokenizer.
      name: where the model came from (part of `identity()`).
      devices: local devices batches are split over: None or "auto" for
        all, a count, or a list.
      compute_dtype: "float32" (default), "bfloat16" or "float16".

    Raises:
      ValueError: if the tokenizer does not fit the model (vocabulary larger
        than the embedding table, or an end token the model cannot find), or
        for a bad `devices` or `compute_dtype`.
    """
    self.name = name
    if precision.check(compute_dtype) != precision.DEFAULT:
      model = type(model)(model.config, dtype=precision.dtype(compute_dtype),
                          _do_init=False)
    self.model = model
    self.tokenizer = tokenizer
    self._set_devices(params, devices, compute_dtype)
    config = model.config
    self.embed_dim = int(config.projection_dim)
    self.image_size = int(config.vision_config.image_size)
    self.transform = clip_transform(self.image_size)
    self.max_length = int(config.text_config.max_position_embeddings)
    if 0 < getattr(tokenizer, "model_max_length", 0) < self.max_length:
      self.max_length = int(tokenizer.model_max_length)
    self._check_tokenizer()
    self._image_fn = xla_cpu.forward_jit(self._image_features)
    self._text_fn = xla_cpu.forward_jit(self._text_features)

  def _check_tokenizer(self) -> None:
    tok, text_config = self.tokenizer, self.model.config.text_config
    eos = tok.eos_token_id
    if eos is None:
      raise ValueError(f"tokenizer of {self.name!r} has no end-of-text token")
    max_id = max(tok.get_vocab().values())
    if max_id >= text_config.vocab_size:
      raise ValueError(
          f"tokenizer of {self.name!r} has token ids up to {max_id} but the "
          f"model's vocab_size is {text_config.vocab_size}")
    ids = tok("a", verbose=False)["input_ids"]
    if ids[-1] != eos:
      raise ValueError(f"tokenizer of {self.name!r} does not end texts with "
                       f"its end token {eos} (got ids {ids})")
    # The text tower pools at argmax(ids) when eos_token_id == 2 (configs
    # older than transformers PR 24773, e.g. OpenAI's), else at the first id
    # equal to eos_token_id.
    if text_config.eos_token_id == 2:
      if eos != max_id:
        raise ValueError(
            f"model {self.name!r} pools text at the largest token id "
            f"(config eos_token_id=2), but the tokenizer's end token {eos} is "
            f"not its largest id {max_id}")
    elif text_config.eos_token_id != eos:
      raise ValueError(
          f"model {self.name!r} pools text at token {text_config.eos_token_id}"
          f" (config eos_token_id) but the tokenizer's end token is {eos}")

  @classmethod
  def from_pretrained(
      cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *,
      tokenizer: transformers.PreTrainedTokenizerBase | str | os.PathLike |
      None = None,
      revision: str | None = None, cache_dir: str | os.PathLike | None = None,
      local_files_only: bool = False, devices: data_parallel.Devices = None,
      compute_dtype: str = precision.DEFAULT) -> "ClipEmbedder":
    """Loads a CLIP model from a hub id or a local directory.

    Flax weights (flax_model.msgpack) are used when present, else PyTorch
    weights (model.safetensors, pytorch_model.bin) are converted; only
    pytorch_model.bin needs torch. Works the same for
    openai/clip-vit-base-patch16 (default), -base-patch32, -large-patch14.

    Args:
      name_or_path: hub id ("owner/name") or directory from save_pretrained.
      tokenizer: a tokenizer, or a directory/hub id to load one from; None
        loads it from `name_or_path`.
      revision: hub revision (branch, tag or commit).
      cache_dir: hub cache directory.
      local_files_only: never touch the network (as HF_HUB_OFFLINE=1).
      devices, compute_dtype: see the constructor.

    Raises:
      ClipLoadError: if the model or tokenizer cannot be loaded; for a hub id
        that cannot be reached it says so and suggests a local directory.
    """
    name = os.fspath(name_or_path)
    hub_kwargs = {"revision": revision, "cache_dir": cache_dir,
                  "local_files_only": local_files_only}
    start = time.perf_counter()
    model, params = loading.load_model(name, hub_kwargs)
    if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
      tokenizer = loading.load_tokenizer(os.fspath(tokenizer or name),
                                         **hub_kwargs)
    logging.info("loaded CLIP %s in %.1f s", name, time.perf_counter() - start)
    return cls(model, params, tokenizer, name, devices=devices,
               compute_dtype=compute_dtype)

  @classmethod
  def random(cls, config_overrides: Mapping[str, Any] | None = None,
             seed: int = 0, tokenizer_dir: str | os.PathLike | None = None,
             tokenizer: transformers.PreTrainedTokenizerBase | None = None,
             *, devices: data_parallel.Devices = None,
             compute_dtype: str = precision.DEFAULT) -> "ClipEmbedder":
    """A CLIP model with random weights, for offline smoke runs and timing.

    Args:
      config_overrides: CLIPConfig keys to change from its defaults, e.g.
        {"projection_dim": 16, "vision_config": {"hidden_size": 32, ...},
        "text_config": {...}}. The text vocab size and special token ids
        default to the tokenizer's.
      seed: PRNG seed of the weights.
      tokenizer_dir: directory holding a saved CLIP tokenizer (e.g. from
        `build_clip_tokenizer`), if `tokenizer` is not given.
      tokenizer: the tokenizer to use.
      devices, compute_dtype: see the constructor.

    Raises:
      ValueError: for unknown config keys or no tokenizer.
    """
    overrides = loading.check_config_overrides(config_overrides)
    if tokenizer is None:
      if tokenizer_dir is None:
        raise ValueError("ClipEmbedder.random needs tokenizer= or "
                         "tokenizer_dir= (see build_clip_tokenizer)")
      tokenizer = loading.load_tokenizer(os.fspath(tokenizer_dir))
    text = {"vocab_size": max(tokenizer.get_vocab().values()) + 1,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": (tokenizer.eos_token_id if tokenizer.pad_token_id
                             is None else tokenizer.pad_token_id),
            **overrides.pop("text_config", {})}
    config = hub.transformers_lib().CLIPConfig(
        text_config=text, vision_config=overrides.pop("vision_config", {}),
        **overrides)
    model = hub.transformers_lib().FlaxCLIPModel(config, _do_init=False)
    params = hub.random_params(model.params_shape_tree, seed)
    return cls(model, params, tokenizer, f"random-clip(seed={seed})",
               devices=devices, compute_dtype=compute_dtype)

  def save_pretrained(self, out_dir: str | os.PathLike) -> None:
    """Saves Flax weights, config and tokenizer; `from_pretrained` reloads."""
    self.model.save_pretrained(os.fspath(out_dir), params=self.params)
    self.tokenizer.save_pretrained(os.fspath(out_dir))

  @property
  def config(self) -> transformers.CLIPConfig:
    return self.model.config

  def _identity_parts(self) -> dict[str, Any]:
    """float32 keys are those of versions before the compute_dtype option,
    and keys are those of versions before SigLIP (same parts)."""
    text, vision = self.config.text_config, self.config.vision_config
    arch = {k: getattr(c, k) for c in (text, vision)
            for k in ("hidden_act", "layer_norm_eps", "num_attention_heads")}
    arch.update(text_eos=text.eos_token_id, max_length=self.max_length,
                transform=self.transform.identity())
    if self.compute_dtype != precision.DEFAULT:
      arch.update(compute_dtype=self.compute_dtype)
    return arch

  def _image_features(self, params, pixels: jax.Array) -> jax.Array:
    # FlaxCLIPModel takes NCHW and transposes back to NHWC; XLA cancels both.
    features = self.model.get_image_features(
        jnp.transpose(pixels, (0, 3, 1, 2)), params=params)
    return embedder_base.l2_normalize(features)

  def _text_features(self, params, ids: jax.Array, mask: jax.Array
                     ) -> jax.Array:
    features = self.model.get_text_features(ids, attention_mask=mask,
                                            params=params)
    return embedder_base.l2_normalize(features)

  def tokenize(self, texts: Sequence[str]
               ) -> tuple[list[list[int]], list[int]]:
    """Token ids per text, truncated to `max_length` keeping the end token.

    Returns:
      (ids, truncated): ids[m] starts with the start token and ends with the
      end token; truncated lists the indices of texts that were longer than
      max_length tokens.
    """
    self._check_texts(texts)
    if not texts:
      return [], []
    ids = self.tokenizer(list(texts), verbose=False)["input_ids"]
    eos, truncated = self.tokenizer.eos_token_id, []
    for m, seq in enumerate(ids):
      if len(seq) > self.max_length:
        ids[m] = seq[:self.max_length - 1] + [eos]
        truncated.append(m)
    return ids, truncated

  def _text_batch(self, rows: Sequence[int], ids: Sequence[Sequence[int]],
                  batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, attention mask), (batch_size, bucket length) int32: end-token
    padding; padding rows see one token (no NaN)."""
    eos = self.tokenizer.eos_token_id
    length = _length_bucket(max(len(ids[r]) for r in rows), self.max_length)
    batch = np.full((batch_size, length), eos, np.int32)
    mask = np.zeros((batch_size, length), np.int32)
    for row, r in enumerate(rows):
      batch[row, :len(ids[r])] = ids[r]
      mask[row, :len(ids[r])] = 1
    mask[len(rows):, 0] = 1
    return batch, mask
