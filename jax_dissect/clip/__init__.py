"""The backbone of P (CLIP or SigLIP): embeddings of probe images and
concepts, and the matrix P.

  tokenizer.py       CLIP's tokenizer built offline from OpenAI's BPE file
  loading.py         CLIP models and tokenizers from hub ids, directories,
                     random; a checkpoint's architecture (read_model_type)
  embedder_base.py   Embedder: the interface and data-parallel machinery
                     both backbones share
  embedder.py        ClipEmbedder; load_backbone (CLIP or SigLIP by
                     config.json), load_embedder / load_run_embedder (a
                     run's backbone)
  siglip/            SigLIP / SigLIP 2 towers in Flax, loader, saver and
                     SiglipEmbedder
  cached.py          P of a backbone through the cache, with the keys
                     describe_neurons uses
  concept_matrix.py  P = cos(image embedding, text embedding)
  text_embed.py      text embedders of the analyses (CLIP, sentence models)

    embedder = clip.load_embedder("google/siglip-base-patch16-224")
    p = clip.concept_activations(embedder.embed_images(paths),
                                 embedder.embed_texts(concepts))
"""

from jax_dissect.clip.concept_matrix import concept_activations
from jax_dissect.clip.concept_matrix import write_concept_activations
from jax_dissect.clip.embedder import check_backbone
from jax_dissect.clip.embedder import clip_transform
from jax_dissect.clip.embedder import ClipEmbedder
from jax_dissect.clip.embedder import load_backbone
from jax_dissect.clip.embedder import load_embedder
from jax_dissect.clip.embedder import load_run_embedder
from jax_dissect.clip.embedder_base import Embedder
from jax_dissect.clip.loading import ClipLoadError
from jax_dissect.clip.loading import DEFAULT_MODEL
from jax_dissect.clip.loading import MODEL_TYPES
from jax_dissect.clip.loading import read_model_type
from jax_dissect.clip.siglip.embedder import SiglipEmbedder
from jax_dissect.clip.tokenizer import build_clip_tokenizer
from jax_dissect.clip.tokenizer import bytes_to_unicode
from jax_dissect.clip.tokenizer import tokenizer_dir_from_bpe

__all__ = [
    "DEFAULT_MODEL", "ClipEmbedder", "ClipLoadError", "Embedder",
    "check_backbone",
    "MODEL_TYPES", "SiglipEmbedder", "build_clip_tokenizer",
    "bytes_to_unicode", "clip_transform", "concept_activations",
    "load_backbone", "load_embedder", "load_run_embedder",
    "read_model_type", "tokenizer_dir_from_bpe", "write_concept_activations",
]
