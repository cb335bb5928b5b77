"""A tiny random CLIP config and a tiny offline CLIP tokenizer."""

import json
import os

from configs import common
from jax_dissect.clip import tokenizer as clip_tokenizer

# A tiny CLIP (ViT with 2 layers of width 32 on 32x32 images, patch 8).
TINY = {**common.small_clip_config(width=32, layers=2, heads=4, image_size=32,
                                   patch_size=8, mlp=37),
        "projection_dim": 16}
LETTERS = [chr(c) for c in range(ord("a"), ord("z") + 1)]
MERGES = [("t", "h"), ("th", "e</w>"), ("d", "o"), ("do", "g</w>")]


def write_tiny_tokenizer(out_dir):
  """A CLIP vocabulary of a-z (alone and word-final), 4 merges, 2 specials."""
  tokens = LETTERS + [c + "</w>" for c in LETTERS]
  tokens += ["".join(m) for m in MERGES] + [clip_tokenizer.START_TOKEN,
                                            clip_tokenizer.END_TOKEN]
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
    json.dump({t: i for i, t in enumerate(tokens)}, f)
  with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES) + "\n")
  return tokens
