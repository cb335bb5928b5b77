"""Pieces shared by the configs: paths of the shared data and smoke models."""

import os

import ml_collections

from jax_dissect import pipeline
from jax_dissect.configs import shared_data

# The project's read-only data: ../shared/data beside the repository, or
# $JAX_DISSECT_SHARED_DATA.
SHARED_DATA = shared_data.root()
IMAGENET_SAMPLE = os.path.join(SHARED_DATA, "imagenet_sample")
CLIP_BPE = os.path.join(SHARED_DATA, "clip_bpe", "bpe_simple_vocab_16e6.txt.gz")


def concepts(name: str) -> str:
  return os.path.join(SHARED_DATA, "concepts", name)


def base() -> ml_collections.ConfigDict:
  return pipeline.default_config()


def small_clip_config(width: int = 64, layers: int = 2, heads: int = 2,
                      image_size: int = 64, patch_size: int = 16,
                      mlp: int | None = None) -> dict:
  """CLIPConfig overrides of a small random CLIP (clip_model="random")."""
  tower = {"hidden_size": width, "intermediate_size": mlp or 2 * width,
           "num_hidden_layers": layers, "num_attention_heads": heads}
  return {"projection_dim": width,
          "vision_config": {**tower, "image_size": image_size,
                            "patch_size": patch_size},
          "text_config": dict(tower)}


def make_smoke(config: ml_collections.ConfigDict,
               name: str) -> ml_collections.ConfigDict:
  """Turns a config into its offline smoke variant.

  Random target weights, a small random CLIP with the real tokenizer (built
  from the shared BPE file), the 1000 ImageNet-sample photos as probe set.
  """
  config.target_weights = "random"
  config.clip_model = "random"
  config.clip_tokenizer = CLIP_BPE
  config.clip_config = ml_collections.ConfigDict(small_clip_config())
  config.d_probe = f"folder:{IMAGENET_SAMPLE}"
  config.batch_size = 50
  config.result_dir = os.path.join("results", f"{name}_smoke")
  config.activation_dir = os.path.join("results", "cache")
  return config
