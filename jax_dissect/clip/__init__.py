"""CLIP: embeddings of probe images and concepts, and the matrix P.

  tokenizer.py       CLIP's tokenizer built offline from OpenAI's BPE file
  loading.py         models and tokenizers from hub ids, directories, random
  embedder.py        ClipEmbedder (both towers, data parallel) and
                     load_embedder / load_run_embedder (a run's CLIP)
  concept_matrix.py  P = cos(image embedding, text embedding)
  text_embed.py      text embedders of the analyses (CLIP, sentence models)

    embedder = clip.load_embedder("openai/clip-vit-base-patch16")
    p = clip.concept_activations(embedder.embed_images(paths),
                                 embedder.embed_texts(concepts))
"""

from jax_dissect.clip.concept_matrix import concept_activations
from jax_dissect.clip.concept_matrix import write_concept_activations
from jax_dissect.clip.embedder import clip_transform
from jax_dissect.clip.embedder import ClipEmbedder
from jax_dissect.clip.embedder import load_embedder
from jax_dissect.clip.embedder import load_run_embedder
from jax_dissect.clip.loading import ClipLoadError
from jax_dissect.clip.loading import DEFAULT_MODEL
from jax_dissect.clip.tokenizer import build_clip_tokenizer
from jax_dissect.clip.tokenizer import bytes_to_unicode
from jax_dissect.clip.tokenizer import tokenizer_dir_from_bpe

__all__ = [
    "DEFAULT_MODEL", "ClipEmbedder", "ClipLoadError", "build_clip_tokenizer",
    "bytes_to_unicode", "clip_transform", "concept_activations",
    "load_embedder", "load_run_embedder", "tokenizer_dir_from_bpe",
    "write_concept_activations",
]
