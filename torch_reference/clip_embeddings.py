"""Reference CLIP embeddings from transformers' PyTorch CLIPModel.

Run by tests/clip/test_embedder.py in a subprocess with USE_TORCH=1 (the library
imports transformers with USE_TORCH=0, so the PyTorch classes cannot be used
in the test process itself):

  USE_TORCH=1 python torch_reference/clip_embeddings.py WORK_DIR

WORK_DIR holds config.json (CLIPConfig kwargs), tokenizer/ (a saved CLIP
tokenizer), pixels.npy ((N, S, S, 3) preprocessed images) and texts.json.
Writes a random CLIPModel (seed 0) to WORK_DIR/model_safetensors and
WORK_DIR/model_bin (save_pretrained with and without safetensors), and
reference.npz with L2-normalised image_emb (N, D), text_emb (M, D) and
P = image_emb @ text_emb.T (N, M).
"""

import json
import os
import sys

import numpy as np
import torch
import transformers


def main(work_dir):
  with open(os.path.join(work_dir, "config.json"), encoding="utf-8") as f:
    config = transformers.CLIPConfig(**json.load(f))
  tokenizer = transformers.CLIPTokenizerFast.from_pretrained(
      os.path.join(work_dir, "tokenizer"))
  torch.manual_seed(0)
  model = transformers.CLIPModel(config).eval()
  for name, safe in (("model_safetensors", True), ("model_bin", False)):
    model.save_pretrained(os.path.join(work_dir, name),
                          safe_serialization=safe)
    tokenizer.save_pretrained(os.path.join(work_dir, name))
  pixels = np.load(os.path.join(work_dir, "pixels.npy"))
  with open(os.path.join(work_dir, "texts.json"), encoding="utf-8") as f:
    texts = json.load(f)
  tokens = tokenizer(texts, padding="max_length", truncation=True,
                     max_length=config.text_config.max_position_embeddings,
                     return_tensors="pt")
  with torch.no_grad():
    image = model.get_image_features(
        pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2))
    text = model.get_text_features(input_ids=tokens["input_ids"],
                                   attention_mask=tokens["attention_mask"])
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    p = image @ text.T
  np.savez(os.path.join(work_dir, "reference.npz"), image_emb=image.numpy(),
           text_emb=text.numpy(), p=p.numpy(),
           input_ids=tokens["input_ids"].numpy())


if __name__ == "__main__":
  main(sys.argv[1])
