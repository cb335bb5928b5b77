"""PyTorch side of the CLIP benchmark, run in its own process.

jax_dissect imports transformers with USE_TORCH=0, which hides transformers'
PyTorch classes in that process; the benchmark therefore runs this module as

  USE_TORCH=1 python -m jax_dissect.benchmarks._clip_torch WORK_DIR

WORK_DIR holds config.json (CLIPConfig kwargs), tokenizer/, pixels.npy
((N, S, S, 3) preprocessed images), texts.json and settings.json
({"seed", "image_batch", "text_batch", "repeats"}). Writes the random CLIPModel to
WORK_DIR/model (safetensors, so Flax loads the same weights), its
L2-normalised embeddings to torch_emb.npz and timings to torch.json.
"""

import json
import os
import sys
import time

import numpy as np
import torch
import transformers


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _best_of(fn, repeats):
  runs = [_timed(fn) for _ in range(repeats)]
  return runs[0][0], min(t for _, t in runs)


def main(work_dir):
  with open(os.path.join(work_dir, "settings.json"), encoding="utf-8") as f:
    settings = json.load(f)
  with open(os.path.join(work_dir, "config.json"), encoding="utf-8") as f:
    config = transformers.CLIPConfig(**json.load(f))
  with open(os.path.join(work_dir, "texts.json"), encoding="utf-8") as f:
    texts = json.load(f)
  tokenizer = transformers.CLIPTokenizerFast.from_pretrained(
      os.path.join(work_dir, "tokenizer"))
  pixels = torch.from_numpy(np.load(os.path.join(work_dir, "pixels.npy")))
  pixels = pixels.permute(0, 3, 1, 2).contiguous()
  torch.manual_seed(settings["seed"])
  model = transformers.CLIPModel(config).eval()
  model.save_pretrained(os.path.join(work_dir, "model"))
  tokenizer.save_pretrained(os.path.join(work_dir, "model"))
  max_length = config.text_config.max_position_embeddings
  ib, tb = settings["image_batch"], settings["text_batch"]

  @torch.no_grad()
  def images():
    out = [model.get_image_features(pixel_values=pixels[i:i + ib])
           for i in range(0, len(pixels), ib)]
    out = torch.cat(out)
    return out / out.norm(dim=-1, keepdim=True)

  @torch.no_grad()
  def text():
    out = []
    for i in range(0, len(texts), tb):
      tokens = tokenizer(texts[i:i + tb], padding=True, truncation=True,
                         max_length=max_length, return_tensors="pt")
      out.append(model.get_text_features(**tokens))
    out = torch.cat(out)
    return out / out.norm(dim=-1, keepdim=True)

  with torch.no_grad():  # Warm-up: one batch of each.
    _, image_warmup_s = _timed(
        lambda: model.get_image_features(pixel_values=pixels[:ib]))
    _, text_warmup_s = _timed(lambda: model.get_text_features(**tokenizer(
        texts[:tb], padding=True, truncation=True, max_length=max_length,
        return_tensors="pt")))
  repeats = settings.get("repeats", 1)  # Best of `repeats` passes.
  image_emb, image_s = _best_of(images, repeats)
  text_emb, text_s = _best_of(text, repeats)
  np.savez(os.path.join(work_dir, "torch_emb.npz"),
           image_emb=image_emb.numpy(), text_emb=text_emb.numpy())
  with open(os.path.join(work_dir, "torch.json"), "w", encoding="utf-8") as f:
    json.dump({"image_s": image_s, "text_s": text_s,
               "image_warmup_s": image_warmup_s,
               "text_warmup_s": text_warmup_s,
               "torch_version": torch.__version__,
               "torch_threads": torch.get_num_threads()}, f)


if __name__ == "__main__":
  main(sys.argv[1])
