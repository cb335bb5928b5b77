"""Pluggable models of Describe-and-Dissect, and JAX defaults for each.

Every stage takes a callable, or a spec string that `resolve` turns into
one:

- "package.module:function": that object, imported with
  `callables.import_callable` (any callable: an API client, a local
  server's client, your own model). For "clip" the object must have
  `embed_images` (and `embed_texts` for the clip_dissect selection), or be
  a function of no arguments that returns such an object (called lazily);
- "default": the default model of the stage (DEFAULTS);
- a hub id ("owner/name", "owner/name@revision") or a local directory:
  the stage's default model class loaded from it.

Models named by a string are loaded lazily (`Lazy`): a run whose stages are
all in the store never loads them. Their cache identity is the spec (plus,
for a local directory, its files' sizes and mtimes).

Default model classes (all transformers/diffusers Flax, jitted):

- `FlaxCaptioner`: a FlaxVisionEncoderDecoderModel image captioner (e.g. a
  ViT-GPT2 captioner); images -> captions.
- `FlaxTextGenerator`: a Flax causal LM (left-padded; e.g. SmolLM2
  Instruct through FlaxLlama, GPT-2, Gemma) or seq2seq LM (e.g. BART;
  transformers 4.57's Flax T5 fails under jax 0.10), greedy decoding;
  prompt -> answer, and `batch`.
- `FlaxDiffusionGenerator`: diffusers' FlaxStableDiffusionPipeline
  (diffusers 0.39.0, the last release with Flax pipelines; optional extra
  `pip install -e '.[diffusion]'`); (prompt, num_images, seed) -> images.
- CLIP: jax_dissect.clip.ClipEmbedder.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from jax_dissect import clip
from jax_dissect.runtime import callables
from jax_dissect.runtime import hub as hf_loading

# transformers is imported on first use (never on import of jax_dissect).
_tf = hf_loading.transformers_lib

KINDS = ("captioner", "llm", "generator", "clip")
# Defaults by hub id (Flax weights on the hub; see docs/dnd.md).
DEFAULTS = {
    "captioner": "ydshieh/vit-gpt2-coco-en",
    "llm": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
    "generator": "CompVis/stable-diffusion-v1-4@flax",
    "clip": "openai/clip-vit-base-patch16",
}


class ModelLoadError(OSError):
  """A DnD model could not be loaded."""


def _hub_error(name: str, what: str):
  def make(err: BaseException | None) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load the {what} {name!r}: {hf_loading.reason(err)}. Save it "
        "with save_pretrained on a machine with network access and pass its "
        "local directory")
  return make


def _split_revision(name: str) -> tuple[str, str | None]:
  if "@" in name and not os.path.exists(name):
    name, revision = name.rsplit("@", 1)
    return name, revision or None
  return name, None


def _dir_fingerprint(path: str) -> str:
  h = hashlib.sha256()
  for root, _, files in sorted(os.walk(path)):
    for f in sorted(files):
      st = os.stat(os.path.join(root, f))
      h.update(f"{os.path.relpath(os.path.join(root, f), path)}|"
               f"{st.st_size}|{st.st_mtime_ns}\n".encode())
  return h.hexdigest()[:16]


class Lazy:
  """A model loaded on first use; its identity is known without loading.

  Calls and attribute reads (batch, embed_images, ...) go to the loaded
  model.
  """

  def __init__(self, loader: Callable[[], Any], identity: str):
    self._loader, self._identity, self._model = loader, identity, None

  def identity(self) -> str:
    return self._identity

  def load(self) -> Any:
    if self._model is None:
      logging.info("DnD: loading %s", self._identity)
      self._model = self._loader()
    return self._model

  def __call__(self, *args, **kwargs):
    return self.load()(*args, **kwargs)

  def __getattr__(self, name: str):
    if name.startswith("__") or name in ("_loader", "_identity", "_model"):
      raise AttributeError(name)
    return getattr(self.load(), name)


def _loaders() -> dict[str, Callable[[str, str | None], Any]]:
  return {
      "captioner": lambda n, r: FlaxCaptioner.from_pretrained(n, revision=r),
      "llm": lambda n, r: FlaxTextGenerator.from_pretrained(n, revision=r),
      "generator": lambda n, r: FlaxDiffusionGenerator.from_pretrained(
          n, revision=r),
      "clip": lambda n, r: clip.ClipEmbedder.from_pretrained(n, revision=r),
  }


def _clip_object(spec: str) -> Any:
  """A CLIP named by "package.module:name": an embedder, or its factory."""
  obj = callables.import_object(spec, "clip")
  if hasattr(obj, "embed_images"):
    return obj
  if callable(obj):
    return Lazy(obj, f"clip:{spec}")
  raise ValueError(f"clip {spec!r} is a {type(obj).__name__}: neither an "
                   "object with embed_images nor a function returning one")


def resolve(spec: Any, kind: str) -> Any:
  """The callable of stage `kind` for `spec` (see the module docstring).

  Args:
    spec: None, a callable/object, or a string.
    kind: one of KINDS.

  Returns:
    None for None; the object itself if it is not a string; else the
    imported object or a `Lazy` default model.

  Raises:
    ValueError: for an unknown kind, a spec that names nothing importable,
      or an imported object that is not callable (for "clip": neither an
      embedder nor a function).
  """
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}; allowed: {list(KINDS)}")
  if spec is None or not isinstance(spec, (str, os.PathLike)):
    return spec
  spec = os.fspath(spec)
  if not spec:
    raise ValueError(f"empty {kind} spec; give 'package.module:function', "
                     "'default', a hub id or a local directory")
  if spec == "default":
    spec = DEFAULTS[kind]
  if callables.is_spec(spec) and not os.path.exists(spec):
    if kind != "clip":
      return callables.import_callable(spec, kind)
    return _clip_object(spec)
  name, revision = _split_revision(spec)
  ident = f"{kind}:{spec}"
  if os.path.isdir(name):
    ident += f"#{_dir_fingerprint(name)}"
  loader = _loaders()[kind]
  return Lazy(lambda: loader(name, revision), ident)


# ---------------------------------------------------------------------------
# Default models.


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  if x.shape[0] >= rows:
    return x
  return np.concatenate([x, np.repeat(x[-1:], rows - x.shape[0], axis=0)])


def _load_flax(name: str, revision: str | None, what: str,
               make: Callable[[Any], Any],
               fix: Callable[[Any, Any], Any] | None = None
               ) -> tuple[Any, Any]:
  """(model made with `make(config)`, params) from a hub id or directory."""
  hub = {"revision": revision}
  config_file, weights = hf_loading.fetch_files(
      name, hub, error=ModelLoadError, hub_error=_hub_error(name, what),
      what=what)
  config = _tf().AutoConfig.from_pretrained(config_file)
  model = make(config)
  return model, hf_loading.read_params(
      weights, model, name, ModelLoadError,
      fix=None if fix is None else lambda params: fix(params, config))


def tie_output_embeddings(params: Any, config: Any) -> Any:
  """Adds lm_head = embed_tokens.T where the checkpoint ties them.

  transformers' Flax Llama/Mistral ports have no tied output layer, so a
  tied checkpoint (e.g. SmolLM2) lacks lm_head; the tie is made here.
  """
  if (not getattr(config, "tie_word_embeddings", False) or "lm_head" in params
      or "embed_tokens" not in params.get("model", {})):
    return params
  params = dict(params)
  embedding = np.asarray(params["model"]["embed_tokens"]["embedding"])
  params["lm_head"] = {"kernel": embedding.T}
  return params


def _from_pretrained(cls: Any, name: str, revision: str | None, what: str
                     ) -> Any:
  try:
    return cls.from_pretrained(name, revision=revision)
  except (OSError, ValueError) as e:
    raise _hub_error(name, what)(e) from e


class FlaxCaptioner:
  """Image captioning with a FlaxVisionEncoderDecoderModel (greedy/beam).

  Call it with a list of PIL images; returns one caption per image.
  """

  def __init__(self, model: Any, params: Any, image_processor: Any,
               tokenizer: Any, name: str, *, max_new_tokens: int = 32,
               num_beams: int = 1, batch_size: int = 16):
    self.model, self.name = model, name
    self.params = jax.device_put(params)
    self.image_processor, self.tokenizer = image_processor, tokenizer
    self.max_new_tokens, self.num_beams = max_new_tokens, num_beams
    self.batch_size = batch_size
    self._fn = jax.jit(self._generate)

  @classmethod
  def from_pretrained(cls, name: str, revision: str | None = None,
                      **kwargs) -> "FlaxCaptioner":
    """Loads model, image processor and tokenizer from a hub id or dir."""
    # This model class cannot skip its random init (_do_init=False).
    model, params = _load_flax(
        name, revision, "captioner", _tf().FlaxVisionEncoderDecoderModel)
    model.params = params  # Drops the random init.
    processor = _from_pretrained(_tf().AutoImageProcessor, name,
                                 revision, "captioner's image processor")
    tokenizer = _from_pretrained(_tf().AutoTokenizer, name, revision,
                                 "captioner's tokenizer")
    return cls(model, params, processor, tokenizer, name, **kwargs)

  def identity(self) -> str:
    return (f"FlaxCaptioner:{self.name}:{self.max_new_tokens}:"
            f"{self.num_beams}")

  def _generate(self, params, pixel_values):
    return self.model.generate(
        pixel_values, params=params, max_new_tokens=self.max_new_tokens,
        num_beams=self.num_beams, do_sample=False).sequences

  def __call__(self, images: Sequence[Any]) -> list[str]:
    captions = []
    for start in range(0, len(images), self.batch_size):
      chunk = list(images[start:start + self.batch_size])
      pixels = np.asarray(self.image_processor(
          images=chunk, return_tensors="np")["pixel_values"], np.float32)
      ids = np.asarray(self._fn(self.params,
                                _pad_rows(pixels, self.batch_size)))
      captions += self.tokenizer.batch_decode(ids[:len(chunk)],
                                              skip_special_tokens=True)
    return [c.strip() for c in captions]


def _flax_lm_class(config: Any) -> Any:
  mapping = (_tf().FlaxAutoModelForSeq2SeqLM
             if getattr(config, "is_encoder_decoder", False) else
             _tf().FlaxAutoModelForCausalLM)
  try:
    return mapping._model_mapping[type(config)]  # pylint: disable=protected-access
  except KeyError as e:
    raise ModelLoadError(
        f"transformers has no Flax language model for {type(config).__name__};"
        " Flax causal LMs: GPT-2, GPT-Neo, GPT-J, OPT, BLOOM, XGLM, Llama, "
        "Mistral, Gemma; seq2seq: BART, ...; or plug in any callable "
        "with --llm=package.module:function") from e


class FlaxTextGenerator:
  """A transformers Flax language model as a prompt -> answer callable.

  Causal LMs get left-padded prompts (with the tokenizer's chat template
  when it has one) and answer with their continuation; seq2seq LMs (T5,
  BART) answer with their decoder output. Decoding is greedy. `batch`
  answers many prompts, `batch_size` at a time, padded to multiples of 32
  tokens so few shapes are compiled.
  """

  def __init__(self, model: Any, params: Any, tokenizer: Any, name: str, *,
               max_new_tokens: int = 24, batch_size: int = 8,
               use_chat_template: bool | None = None):
    self.model, self.name, self.tokenizer = model, name, tokenizer
    self.params = jax.device_put(params)
    self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
    self.seq2seq = bool(getattr(model.config, "is_encoder_decoder", False))
    if use_chat_template is None:
      use_chat_template = (not self.seq2seq and
                           bool(getattr(tokenizer, "chat_template", None)))
    self.use_chat_template = use_chat_template
    if tokenizer.pad_token_id is None:
      tokenizer.pad_token = tokenizer.eos_token
    self._fns: dict[int, Callable] = {}

  @classmethod
  def from_pretrained(cls, name: str, revision: str | None = None,
                      **kwargs) -> "FlaxTextGenerator":
    """Loads a Flax causal or seq2seq LM and its tokenizer."""
    model, params = _load_flax(
        name, revision, "language model",
        lambda c: _flax_lm_class(c)(c, _do_init=False), tie_output_embeddings)
    tokenizer = _from_pretrained(_tf().AutoTokenizer, name, revision,
                                 "language model's tokenizer")
    return cls(model, params, tokenizer, name, **kwargs)

  def identity(self) -> str:
    return (f"FlaxTextGenerator:{self.name}:{self.max_new_tokens}:"
            f"{self.use_chat_template}")

  def _format(self, prompt: str) -> str:
    if not self.use_chat_template:
      return prompt
    return self.tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False,
        add_generation_prompt=True)

  def _fn(self, length: int) -> Callable:
    if length not in self._fns:
      def generate(params, ids, mask):
        return self.model.generate(
            ids, attention_mask=mask, params=params,
            max_new_tokens=self.max_new_tokens, do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id).sequences
      self._fns[length] = jax.jit(generate)
    return self._fns[length]

  def batch(self, prompts: Sequence[str]) -> list[str]:
    answers = []
    self.tokenizer.padding_side = "right" if self.seq2seq else "left"
    for start in range(0, len(prompts), self.batch_size):
      chunk = [self._format(p) for p in prompts[start:start +
                                                 self.batch_size]]
      enc = self.tokenizer(chunk, padding="longest", return_tensors="np")
      length = -(-enc["input_ids"].shape[1] // 32) * 32
      ids, mask = [np.asarray(enc[k], np.int32) for k in
                   ("input_ids", "attention_mask")]
      pad = length - ids.shape[1]
      side = (0, pad) if self.seq2seq else (pad, 0)
      ids = np.pad(ids, ((0, 0), side),
                   constant_values=self.tokenizer.pad_token_id)
      mask = np.pad(mask, ((0, 0), side))
      out = np.asarray(self._fn(length)(
          self.params, _pad_rows(ids, self.batch_size),
          _pad_rows(mask, self.batch_size)))[:len(chunk)]
      new = out[:, 1:] if self.seq2seq else out[:, length:]
      answers += self.tokenizer.batch_decode(new, skip_special_tokens=True)
    return [a.strip() for a in answers]

  def __call__(self, prompt: str) -> str:
    return self.batch([prompt])[0]


def _import_diffusers():
  try:
    import diffusers  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ModelLoadError(
        "the default generator needs diffusers' Flax Stable Diffusion "
        "pipeline: pip install -e '.[diffusion]' (diffusers 0.39.0, the last "
        "release with Flax pipelines), or plug in any text-to-image "
        "callable with --generator=package.module:function") from e
  if not hasattr(diffusers, "FlaxStableDiffusionPipeline"):
    raise ModelLoadError(
        f"diffusers {diffusers.__version__} has no Flax pipelines (removed in "
        "0.40); install diffusers==0.39.0 (pip install -e '.[diffusion]')")
  return diffusers


class FlaxDiffusionGenerator:
  """Text-to-image with diffusers' FlaxStableDiffusionPipeline.

  Call it as generator(prompt, num_images, seed) -> (n, H, W, 3) uint8.
  The same (prompt, num_images, seed) always gives the same images.
  """

  def __init__(self, pipeline: Any, params: Mapping[str, Any], name: str,
               *, num_inference_steps: int = 50, guidance_scale: float = 7.5,
               height: int | None = None, width: int | None = None):
    self.pipeline, self.name = pipeline, name
    self.params = jax.device_put(dict(params))
    self.num_inference_steps = num_inference_steps
    self.guidance_scale = guidance_scale
    scale = pipeline.vae_scale_factor
    sample = pipeline.unet.config.sample_size
    self.height = height or sample * scale
    self.width = width or sample * scale

    def generate(params, ids, key):
      return pipeline._generate(  # pylint: disable=protected-access
          ids, params, key, self.num_inference_steps, self.height,
          self.width, jnp.float32(self.guidance_scale))

    self._fn = jax.jit(generate)

  @classmethod
  def from_pretrained(cls, name: str, revision: str | None = None,
                      scheduler: str = "dpm_solver", dtype: str = "float32",
                      **kwargs) -> "FlaxDiffusionGenerator":
    """Loads a Flax Stable Diffusion pipeline (e.g. revision "flax").

    scheduler="dpm_solver" swaps in FlaxDPMSolverMultistepScheduler, as
    the original used DPMSolverMultistepScheduler; "default" keeps the
    pipeline's. The safety checker is not loaded.
    """
    diffusers = _import_diffusers()
    try:
      pipeline, params = diffusers.FlaxStableDiffusionPipeline.from_pretrained(
          name, revision=revision, dtype=getattr(jnp, dtype),
          safety_checker=None)
      if scheduler == "dpm_solver":
        solver = diffusers.FlaxDPMSolverMultistepScheduler
        sched, state = solver.from_pretrained(name, subfolder="scheduler",
                                              revision=revision)
        pipeline.scheduler, params["scheduler"] = sched, state
    except (OSError, ValueError) as e:
      raise _hub_error(name, "Stable Diffusion pipeline")(e) from e
    return cls(pipeline, params, name, **kwargs)

  def identity(self) -> str:
    return (f"FlaxDiffusionGenerator:{self.name}:{self.num_inference_steps}:"
            f"{self.guidance_scale}:{self.height}x{self.width}:"
            f"{type(self.pipeline.scheduler).__name__}")

  def __call__(self, prompt: str, num_images: int, seed: int) -> np.ndarray:
    ids = self.pipeline.prepare_inputs([prompt] * num_images)
    images = self._fn(self.params, ids, jax.random.key(seed))
    return np.round(np.clip(np.asarray(images, np.float32), 0, 1) * 255
                    ).astype(np.uint8)
