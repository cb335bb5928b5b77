"""Text embedders for the analyses: `text_embed_fn(list[str]) -> (n, D)`.

Every analysis that compares strings (evaluation, the CLIP zero-shot
categorizer, compositional concepts, weight analysis) takes a callable that
maps a list of n strings to an (n, D) float32 array with L2-normalised rows.
This module provides:

- `cached_embedder`: looks strings up in embeddings already computed (the
  concept set's CLIP text embeddings of a results directory), with an
  optional fallback embedder for strings outside it;
- `sentence_transformer_embedder`: a sentence-transformers model
  (all-mpnet-base-v2 in the paper), from the optional extra `sentence`;
- `clip_text_embedder` / `run_clip_embedder`: CLIP's text tower via
  jax_dissect.clip (a named model, or the run's own CLIP);
- `add_options` / `from_options`: the text-embedder options every analysis
  that compares strings shares;
- `normalize_rows` and `embed_unique` helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import sys

import numpy as np

from jax_dissect.runtime import callables

TextEmbedFn = Callable[[Sequence[str]], np.ndarray]

DEFAULT_SENTENCE_MODEL = "sentence-transformers/all-mpnet-base-v2"
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """Returns x / ||x|| row-wise as float32; x: (n, D)."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def embed_unique(text_embed_fn: TextEmbedFn,
                 texts: Sequence[str]) -> np.ndarray:
  """Embeds each distinct string once; returns (len(texts), D) float32 rows.

  Rows are re-normalised, so an embedder that is slightly off unit norm
  still gives cosines in [-1, 1].
  """
  texts = list(texts)
  if not texts:
    raise ValueError("nothing to embed: the list of texts is empty")
  unique = list(dict.fromkeys(texts))
  emb = np.asarray(text_embed_fn(unique), np.float32)
  if emb.ndim != 2 or emb.shape[0] != len(unique):
    raise ValueError(f"text_embed_fn returned shape {emb.shape} for "
                     f"{len(unique)} texts; expected ({len(unique)}, D)")
  index = {t: i for i, t in enumerate(unique)}
  return normalize_rows(emb[[index[t] for t in texts]])


def cached_embedder(texts: Sequence[str], embeddings: np.ndarray,
                    fallback: TextEmbedFn | None = None) -> TextEmbedFn:
  """An embedder that looks texts up in precomputed embeddings.

  Args:
    texts: the M strings that were embedded (e.g. a results' concepts).
    embeddings: (M, D) their embeddings, row m for texts[m].
    fallback: embedder for strings not in `texts`; without one, such strings
      are an error.

  Returns:
    text_embed_fn(list[str]) -> (n, D) float32, L2-normalised rows.
  """
  embeddings = np.asarray(embeddings)
  if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
    raise ValueError(f"embeddings of shape {embeddings.shape} do not match "
                     f"{len(texts)} texts; expected ({len(texts)}, D)")
  index = {}
  for i, t in enumerate(texts):
    index.setdefault(t, i)

  def embed(batch: Sequence[str]) -> np.ndarray:
    batch = list(batch)
    missing = [t for t in dict.fromkeys(batch) if t not in index]
    if missing and fallback is None:
      raise ValueError(
          f"{len(missing)} strings are not in the cached embeddings and no "
          f"fallback embedder was given, e.g. {missing[:3]}")
    out = np.empty((len(batch), embeddings.shape[1]), np.float32)
    known = [i for i, t in enumerate(batch) if t in index]
    out[known] = embeddings[[index[batch[i]] for i in known]]
    if missing:
      extra = normalize_rows(fallback(missing))
      if extra.shape[1] != embeddings.shape[1]:
        raise ValueError(f"fallback embedder gives dimension {extra.shape[1]}, "
                         f"the cached embeddings {embeddings.shape[1]}")
      pos = {t: j for j, t in enumerate(missing)}
      rows = [i for i, t in enumerate(batch) if t not in index]
      out[rows] = extra[[pos[batch[i]] for i in rows]]
    return normalize_rows(out)

  return embed


def sentence_transformer_embedder(
    model: str = DEFAULT_SENTENCE_MODEL, *, device: str | None = None,
    batch_size: int = 64) -> TextEmbedFn:
  """A sentence-transformers model as a text_embed_fn.

  Args:
    model: hub id (default all-mpnet-base-v2, the paper's) or a local
      directory saved with SentenceTransformer.save().
    device: torch device ("cpu", "cuda"); None lets the library choose.
    batch_size: texts per forward pass.

  Returns:
    text_embed_fn(list[str]) -> (n, D) float32, L2-normalised rows.

  Raises:
    ImportError: if the optional extra `sentence` is not installed.
    RuntimeError: if transformers was already imported with PyTorch off
      (USE_TORCH=0, as the command-line entry points set unless a sentence
      model is asked for).
  """
  try:
    import sentence_transformers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "sentence-embedding evaluation needs the optional extra 'sentence': "
        "pip install -e '.[sentence]' (sentence-transformers)") from e
  except Exception as e:  # transformers' torch-only modules without torch.
    transformers = sys.modules.get("transformers")
    if transformers is None or transformers.utils.is_torch_available():
      raise
    raise RuntimeError(
        "sentence-transformers needs transformers with PyTorch, but "
        "transformers was already imported with USE_TORCH=0: unset USE_TORCH "
        "(or set USE_TORCH=1) before transformers is first used") from e
  st_model = sentence_transformers.SentenceTransformer(model, device=device)

  def embed(texts: Sequence[str]) -> np.ndarray:
    emb = st_model.encode(list(texts), batch_size=batch_size,
                          convert_to_numpy=True, normalize_embeddings=True,
                          show_progress_bar=False)
    return normalize_rows(emb)

  return embed


def clip_text_embedder(model: str = DEFAULT_CLIP_MODEL,
                       **kwargs) -> TextEmbedFn:
  """The text tower of a CLIP or SigLIP checkpoint as a text_embed_fn.

  Args:
    model: hub id or local directory of a CLIP or SigLIP checkpoint (the
      architecture comes from its config.json), the one the run used so
      its embedding space matches.
    **kwargs: passed to jax_dissect.clip.load_backbone (e.g.
      local_files_only=True).

  Returns:
    text_embed_fn(list[str]) -> (n, D) float32, L2-normalised rows.
  """
  from jax_dissect.clip import embedder as embedder_lib  # pylint: disable=g-import-not-at-top
  return embedder_fn(embedder_lib.load_backbone(model, **kwargs))


def embedder_fn(embedder) -> TextEmbedFn:
  """A loaded embedder's (clip.ClipEmbedder, clip.SiglipEmbedder) text
  tower as a text_embed_fn."""
  return lambda texts: normalize_rows(embedder.embed_texts(list(texts)))


def run_clip_embedder(run) -> TextEmbedFn:
  """The text tower of the CLIP a run used, rebuilt from its config.json.

  Works for hub ids, local directories and `random` CLIPs (same config,
  seed and tokenizer), so strings outside the concept set land in the same
  space as the run's cached text embeddings.
  """
  from jax_dissect.clip import embedder as embedder_lib  # pylint: disable=g-import-not-at-top
  return embedder_fn(embedder_lib.load_run_embedder(run.config))


def checked_embedder(fn: TextEmbedFn, name: str) -> TextEmbedFn:
  """A user's text embedder whose misuse is one line naming it.

  A function that does not take one list of strings (TypeError from the
  call) or does not return n finite rows, (n, D) numbers, raises a
  ValueError naming `name` (the option) instead of a traceback.
  """

  def embed(texts: Sequence[str]) -> np.ndarray:
    texts = list(texts)
    try:
      out = fn(texts)
    except TypeError as e:
      raise ValueError(f"{name} cannot be called with a list of "
                       f"{len(texts)} strings: {_first_line(e)}; it must "
                       "map list[str] to an (n, D) array") from None
    try:
      emb = np.asarray(out, np.float32)
    except (TypeError, ValueError):
      emb = None
    if emb is None or emb.ndim != 2 or emb.shape[0] != len(texts):
      got = (f"shape {emb.shape}" if emb is not None
             else f"a {type(out).__name__}")
      raise ValueError(f"{name} returned {got} for {len(texts)} strings; "
                       f"expected an ({len(texts)}, D) array of numbers")
    if not np.all(np.isfinite(emb)):
      raise ValueError(f"{name} returned NaN or inf values")
    return emb

  return embed


def _first_line(e: BaseException, limit: int = 120) -> str:
  text = " ".join(str(e).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


# Kinds of text embedder the analyses' `text_embedder` option takes.
EMBEDDER_KINDS = ("cached", "clip", "cached+clip", "sentence")


def make_text_embedder(kind: str, run=None,
                       model: str | None = None) -> TextEmbedFn:
  """Builds a text embedder by name, as the analyses' options do.

  Args:
    kind: one of EMBEDDER_KINDS: "cached" (the concept set's CLIP text
      embeddings stored with `run`; other strings are an error), "clip"
      (CLIP's text tower), "cached+clip" (cached, CLIP for other strings),
      "sentence" (a sentence-transformers model).
    run: a results.Run (needed for the "cached" kinds; its CLIP is the
      default CLIP, rebuilt from its config, random CLIPs included).
    model: the CLIP or sentence model (hub id or local dir) instead of the
      run's CLIP / DEFAULT_SENTENCE_MODEL.

  Returns:
    text_embed_fn.
  """
  if kind not in EMBEDDER_KINDS:
    raise ValueError(f"unknown text embedder {kind!r}; allowed: "
                     f"{', '.join(EMBEDDER_KINDS)}")
  if kind == "sentence":
    return sentence_transformer_embedder(model or DEFAULT_SENTENCE_MODEL)

  def clip_fn():
    if model or run is None:
      return clip_text_embedder(model or DEFAULT_CLIP_MODEL)
    return run_clip_embedder(run)

  if kind == "clip":
    return clip_fn()
  if run is None:
    raise ValueError(f"text embedder {kind!r} needs a results directory")
  fallback = None
  if kind == "cached+clip":
    cache: list[TextEmbedFn] = []

    def fallback(texts):  # Load CLIP only if a string is not cached.
      if not cache:
        cache.append(clip_fn())
      return cache[0](texts)

  return cached_embedder(run.concepts, run.text_embeddings(), fallback)


def add_options(config, default: str = "cached+clip") -> None:
  """Adds the shared text-embedder options to an analysis' ConfigDict.

  text_embedder: one of EMBEDDER_KINDS (or "none" where the analysis allows
  it, see from_options);
  text_model: the CLIP or sentence model instead of the run's CLIP;
  text_embed_fn: "package.module:function", a custom embedder
  (list[str] -> (n, D) L2-normalised rows) used instead of text_embedder.
  """
  config.text_embedder = default  # cached, clip, cached+clip or sentence.
  config.text_model = ""  # CLIP/sentence model instead of the run's CLIP.
  config.text_embed_fn = ""  # package.module:function, a custom embedder.


def from_options(config, run, allow_none: bool = False
                 ) -> TextEmbedFn | None:
  """The text embedder the options of `add_options` name (None for "none")."""
  if config.text_embed_fn:
    return checked_embedder(
        callables.import_callable(config.text_embed_fn, "text_embed_fn"),
        f"text_embed_fn={config.text_embed_fn!r}")
  kinds = EMBEDDER_KINDS + (("none",) if allow_none else ())
  if config.text_embedder not in kinds:
    raise ValueError(f"text_embedder={config.text_embedder!r} is not valid; "
                     f"allowed: {', '.join(kinds)}")
  if config.text_embedder == "none":
    return None
  return make_text_embedder(config.text_embedder, run,
                            config.text_model or None)
