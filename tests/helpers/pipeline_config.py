"""An in-process describe_neurons config on tiny random models (resnet18
cifar stem at 32 px, a one-layer random CLIP), and where the photos are."""

import os

from configs import common
from configs import shared_data
from jax_dissect import pipeline

SHARED = shared_data.root()
SAMPLE = os.path.join(SHARED, "imagenet_sample")
IMAGENET_LABELS = os.path.join(SHARED, "concepts", "imagenet_labels.txt")
BPE = os.path.join(SHARED, "clip_bpe", "bpe_simple_vocab_16e6.txt.gz")
TINY_CLIP = {**common.small_clip_config(width=32, layers=1, image_size=32),
             "projection_dim": 16}


def config(tmp_path, **overrides):
  c = pipeline.default_config()
  c.target_model = "resnet18_cifar100"  # 32x32 inputs: fast on CPU.
  c.target_weights = "random"
  c.target_layers = "layer1,layer4"
  c.clip_model = "random"
  c.clip_tokenizer = BPE
  c.clip_config = TINY_CLIP
  c.batch_size = 16
  c.result_dir = str(tmp_path / "results")
  c.activation_dir = str(tmp_path / "cache")
  c.similarity_kwargs = {"top_k": 5}
  for k, v in overrides.items():
    c[k] = v
  return c
