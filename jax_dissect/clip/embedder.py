"""CLIP image and text embeddings with FlaxCLIPModel.

`ClipEmbedder` wraps a Hugging Face FlaxCLIPModel, its parameters and a
CLIPTokenizerFast, and runs both towers data parallel over local devices:

  clip = ClipEmbedder.from_pretrained("openai/clip-vit-base-patch16")
  image_emb = clip.embed_images(paths)           # (N, D) float32, unit norm
  text_emb = clip.embed_texts(concept_set.texts())  # (M, D)
  p = concept_matrix.concept_activations(image_emb, text_emb)   # (N, M)

`load_embedder` builds the CLIP a run's options name (hub id, local
directory or random); loading itself is jax_dissect.clip.loading. Nothing
here needs torch (except reading a pytorch_model.bin); the command-line
entry points set USE_TORCH=0 before transformers is imported unless a
command needs PyTorch.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import itertools
import json
import os
import tempfile
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence, TYPE_CHECKING

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jax_dissect.clip import loading
from jax_dissect.clip import tokenizer as tokenizer_lib
from jax_dissect.data import loader
from jax_dissect.data import preprocess
from jax_dissect.runtime import data_parallel
from jax_dissect.runtime import hub
from jax_dissect.runtime import precision
from jax_dissect.runtime import progress as progress_lib

if TYPE_CHECKING:
  import transformers

DEFAULT_MODEL = loading.DEFAULT_MODEL
_PROGRESS_EVERY_S = 10.0


def load_embedder(model: str = DEFAULT_MODEL, *, seed: int = 0,
                  tokenizer: str | os.PathLike = "",
                  config_overrides: Mapping[str, Any] | None = None,
                  work_dir: str | os.PathLike | None = None,
                  devices: data_parallel.Devices = None,
                  compute_dtype: str = precision.DEFAULT) -> "ClipEmbedder":
  """The CLIP a run's options name (describe_neurons' clip_* options).

  Args:
    model: a hub id or local directory, or "random" for a seeded random
      CLIP (offline smoke runs).
    seed: seed of the random weights (model="random").
    tokenizer: for model="random": a saved tokenizer directory, or OpenAI's
      bpe_simple_vocab_16e6.txt.gz (built once into `work_dir`).
    config_overrides: CLIPConfig overrides (model="random").
    work_dir: where a tokenizer built from a BPE file is kept (default: a
      temporary directory).
    devices: local devices each batch is split over ("auto" = all).
    compute_dtype: "float32", "bfloat16" or "float16" for both towers.

  Returns:
    The ClipEmbedder.
  """
  kwargs = {"devices": devices, "compute_dtype": compute_dtype}
  if model != "random":
    return ClipEmbedder.from_pretrained(model, **kwargs)
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


def load_run_embedder(run_config: Mapping[str, Any]) -> "ClipEmbedder":
  """The CLIP a describe_neurons run used, rebuilt from its config.json.

  Hub ids, local directories and random CLIPs (same config, seed and
  tokenizer) alike, in the run's compute dtype, so new embeddings land in
  the same space as the run's cached ones. A tokenizer built from a BPE
  file is kept in the run's activation_dir when that directory exists.

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
# Embedding.


def clip_transform(image_size: int) -> preprocess.ImageTransform:
  """CLIPImageProcessor's preprocessing for `image_size` (CLIP_EVAL at 224):
  resize the short side to image_size (bicubic), floor-rounded center crop
  of image_size, CLIP mean/std."""
  return dataclasses.replace(preprocess.CLIP_EVAL, resize=image_size,
                             crop=image_size)


def _l2_normalize(x: jax.Array) -> jax.Array:
  x = x.astype(jnp.float32)
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
  it = iter(items)
  while chunk := list(itertools.islice(it, size)):
    yield chunk


def _length_bucket(length: int, max_length: int) -> int:
  """Padded length of a batch whose longest text has `length` tokens.

  Exact up to 16 tokens (concepts are short: 3-7 tokens for 20k.txt), then
  multiples of 16, at most max_length; so few shapes are compiled.
  """
  if length <= 16:
    return min(length, max_length)
  return min(-(-length // 16) * 16, max_length)


class ClipEmbedder:
  """CLIP image/text embeddings (L2-normalised float32) with FlaxCLIPModel.

  Batches of images or texts run data parallel over the embedder's local
  devices (the parameters are replicated on every device once; each call
  computes one batch per device, padded to the batch size, so embeddings
  are the same bit for bit on any number of devices). With compute_dtype
  bfloat16 or float16 the towers run in that dtype (parameters cast once);
  embeddings are float32 either way.

  Attributes:
    name: hub id, local directory or "random(...)" this model came from.
    model: the transformers FlaxCLIPModel (its params are held separately),
      computing in `compute_dtype`.
    params: the model's parameter pytree (in `compute_dtype`, replicated on
      every device of `data_parallel`).
    compute_dtype: "float32", "bfloat16" or "float16".
    data_parallel: the data_parallel.DataParallel batches are split over.
    tokenizer: the CLIPTokenizerFast.
    transform: image preprocessing (CLIP_EVAL at the config's image size).
    embed_dim: D, the size of both embeddings (config.projection_dim).
    image_size: side of the square model input in pixels.
    max_length: tokens per text, special tokens included (77 for CLIP).
  """

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
    self.compute_dtype = precision.check(compute_dtype)
    if compute_dtype != precision.DEFAULT:
      model = type(model)(model.config, dtype=precision.dtype(compute_dtype),
                          _do_init=False)
    self.model = model
    self.tokenizer = tokenizer
    self.data_parallel = data_parallel.DataParallel(devices)
    self.params = self.data_parallel.replicate(precision.cast_floating(
        jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params),
        compute_dtype))
    config = model.config
    self.embed_dim = int(config.projection_dim)
    self.image_size = int(config.vision_config.image_size)
    self.transform = clip_transform(self.image_size)
    self.max_length = int(config.text_config.max_position_embeddings)
    if 0 < getattr(tokenizer, "model_max_length", 0) < self.max_length:
      self.max_length = int(tokenizer.model_max_length)
    self._check_tokenizer()
    self._identity = None
    self._image_fn = jax.jit(self._image_features)
    self._text_fn = jax.jit(self._text_features)

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

  def identity(self) -> str:
    """A cache key: "<name>@<sha256 prefix>" of weights, config, tokenizer,
    preprocessing and compute dtype, so equal keys mean equal embeddings.

    float32 keys are those of versions before the compute_dtype option.
    """
    if self._identity is None:
      h = hashlib.sha256()
      leaves = jax.tree_util.tree_leaves_with_path(self.params)
      for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(
          kv[0])):
        arr = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}{arr.dtype}{arr.shape}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
      text, vision = self.config.text_config, self.config.vision_config
      arch = {k: getattr(c, k) for c in (text, vision)
              for k in ("hidden_act", "layer_norm_eps", "num_attention_heads")}
      arch.update(text_eos=text.eos_token_id, max_length=self.max_length,
                  transform=self.transform.identity())
      if self.compute_dtype != precision.DEFAULT:
        arch.update(compute_dtype=self.compute_dtype)
      h.update(json.dumps(arch, sort_keys=True, default=str).encode())
      backend = getattr(self.tokenizer, "backend_tokenizer", None)
      h.update((backend.to_str() if backend is not None else
                json.dumps(self.tokenizer.get_vocab(), sort_keys=True)
                ).encode())
      self._identity = f"{self.name}@{h.hexdigest()[:16]}"
    return self._identity

  # -- images ---------------------------------------------------------------

  def _image_features(self, params, pixels: jax.Array) -> jax.Array:
    # FlaxCLIPModel takes NCHW and transposes back to NHWC; XLA cancels both.
    features = self.model.get_image_features(
        jnp.transpose(pixels, (0, 3, 1, 2)), params=params)
    return _l2_normalize(features)

  def preprocess(self, image: Any) -> np.ndarray:
    """One image (path, PIL image or uint8 array) -> (S, S, 3) float32."""
    if isinstance(image, (str, os.PathLike)):
      image = preprocess.load_rgb(image)
    elif not isinstance(image, (Image.Image, np.ndarray)):
      raise ValueError(
          f"images must be file paths, PIL images or uint8 arrays; got "
          f"{type(image).__name__}")
    return self.transform(image)

  def embed_pixels(self, pixels: np.ndarray, batch_size: int = 64
                   ) -> np.ndarray:
    """Embeds preprocessed images.

    Args:
      pixels: (N, S, S, 3) float32, already through `self.transform`.
      batch_size: images per jitted call.

    Returns:
      (N, D) float32, rows of unit norm.
    """
    pixels = np.asarray(pixels, np.float32)
    self._check_pixels(pixels)
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return self.embed_batches(
        (pixels[i:i + batch_size] for i in range(0, len(pixels), batch_size)),
        batch_size=batch_size, num_images=len(pixels))

  def _check_pixels(self, pixels: np.ndarray) -> None:
    want = (self.image_size, self.image_size, 3)
    if pixels.ndim != 4 or pixels.shape[1:] != want:
      raise ValueError(f"pixels must have shape (N, {want[0]}, {want[1]}, 3); "
                       f"got {pixels.shape}")

  def embed_images(self, images: Iterable[Any], batch_size: int = 64,
                   num_threads: int | None = None) -> np.ndarray:
    """Embeds a stream of images in batches under jit.

    Images are preprocessed like CLIPImageProcessor (resize short side to
    the model's image size, bicubic; center crop; CLIP mean/std) in a thread
    pool while the previous batch runs.

    Args:
      images: iterable of file paths, PIL images or uint8 (H, W[, C])
        arrays; consumed once, batch by batch.
      batch_size: images per device per call (the last batch is padded).
      num_threads: preprocessing threads (default: every CPU).

    Returns:
      (N, D) float32, rows of unit norm.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    total = len(images) if hasattr(images, "__len__") else None
    with concurrent.futures.ThreadPoolExecutor(
        num_threads or loader.default_threads()) as pool:
      return self.embed_batches(
          (np.stack(list(pool.map(self.preprocess, chunk)))
           for chunk in _batches(images, batch_size)),
          batch_size=batch_size, num_images=total)

  def embed_batches(self, batches: Iterable[np.ndarray], batch_size: int = 64,
                    num_images: int | None = None) -> np.ndarray:
    """Embeds a stream of preprocessed batches (e.g. from
    jax_dissect.data.loader).

    See `iter_embed_batches`.

    Returns:
      (sum B_i, D) float32, rows of unit norm.
    """
    outputs = list(self.iter_embed_batches(batches, batch_size, num_images))
    if not outputs:
      return np.zeros((0, self.embed_dim), np.float32)
    return np.concatenate(outputs)

  def iter_embed_batches(self, batches: Iterable[np.ndarray],
                         batch_size: int = 64, num_images: int | None = None
                         ) -> Iterator[np.ndarray]:
    """Yields the embeddings of a stream of preprocessed batches, in order.

    Each batch is padded with zero rows to `batch_size` and is one device's
    share of a call (n devices embed n batches at once); the next call is
    dispatched before the embeddings of the last one are copied back.

    Args:
      batches: (B_i, S, S, 3) float32 batches through `self.transform`,
        B_i <= batch_size.
      batch_size: images per device per call.
      num_images: the total, for progress lines.

    Yields:
      (B_i, D) float32 per batch, rows of unit norm.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    progress = progress_lib.Progress("CLIP images", num_images,
                                     _PROGRESS_EVERY_S)

    def checked(batches):
      for batch in batches:
        batch = np.asarray(batch, np.float32)
        self._check_pixels(batch)
        yield batch

    for result, rows in self.data_parallel.run_batches(
        self._image_fn, self.params, checked(batches), batch_size):
      result = np.asarray(result, np.float32)
      precision.check_finite({"CLIP": result}, self.compute_dtype,
                             "image embeddings")
      progress.update(rows)
      yield result
    progress.update(0, final=True)

  # -- texts ----------------------------------------------------------------

  def _text_features(self, params, ids: jax.Array, mask: jax.Array
                     ) -> jax.Array:
    features = self.model.get_text_features(ids, attention_mask=mask,
                                            params=params)
    return _l2_normalize(features)

  def tokenize(self, texts: Sequence[str]
               ) -> tuple[list[list[int]], list[int]]:
    """Token ids per text, truncated to `max_length` keeping the end token.

    Returns:
      (ids, truncated): ids[m] starts with the start token and ends with the
      end token; truncated lists the indices of texts that were longer than
      max_length tokens.
    """
    if isinstance(texts, str):
      raise ValueError("texts must be a sequence of strings, not one string")
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
      raise ValueError(f"texts must be strings; got {bad[0]!r}")
    if not texts:
      return [], []
    ids = self.tokenizer(list(texts), verbose=False)["input_ids"]
    eos, truncated = self.tokenizer.eos_token_id, []
    for m, seq in enumerate(ids):
      if len(seq) > self.max_length:
        ids[m] = seq[:self.max_length - 1] + [eos]
        truncated.append(m)
    return ids, truncated

  def embed_texts(self, texts: Sequence[str], batch_size: int = 256, *,
                  share: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Embeds texts (e.g. concepts) in batches under jit.

    Texts longer than `max_length` tokens are truncated (the end token is
    kept) with a warning naming how many. Texts are batched by token length
    (the batches do not depend on `share`, so neither do the embeddings).

    Args:
      texts: M strings, tokenized as written (no template added here).
      batch_size: texts per device per call.
      share: (i, n): compute only batches i, i + n, i + 2n, ... and leave
        the other rows zero (process i of n; the sum over the n shares is
        the whole result).

    Returns:
      (M, D) float32, rows of unit norm (zero rows outside `share`).
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    ids, truncated = self.tokenize(texts)
    if truncated:
      logging.warning(
          "%d of %d texts are longer than CLIP's %d tokens and were "
          "truncated (first: text %d, %r)", len(truncated), len(texts),
          self.max_length, truncated[0], texts[truncated[0]][:80])
    eos = self.tokenizer.eos_token_id
    progress = progress_lib.Progress("CLIP texts", len(ids), _PROGRESS_EVERY_S)
    out = np.zeros((len(ids), self.embed_dim), np.float32)
    # Batches of similar length waste little compute on padding.
    order = np.argsort([len(seq) for seq in ids], kind="stable")
    index, count = share
    chunks = [order[start:start + batch_size] for start in range(
        index * batch_size, len(ids), count * batch_size)]

    def padded(rows):
      length = _length_bucket(max(len(ids[r]) for r in rows), self.max_length)
      batch = np.full((batch_size, length), eos, np.int32)
      mask = np.zeros((batch_size, length), np.int32)
      for row, r in enumerate(rows):
        batch[row, :len(ids[r])] = ids[r]
        mask[row, :len(ids[r])] = 1
      mask[len(rows):, 0] = 1  # Padding rows: one visible token, no NaN.
      return batch, mask

    results = self.data_parallel.run_batches(
        self._text_fn, self.params, map(padded, chunks), batch_size)
    for i, (rows, (result, _)) in enumerate(zip(chunks, results)):
      out[rows] = result[:len(rows)]
      progress.update(len(rows), final=i == len(chunks) - 1)
    precision.check_finite({"CLIP": out}, self.compute_dtype,
                           "text embeddings")
    return out
