"""PyTorch side of the CLIP benchmark: a worker process driven over stdin.

jax_dissect imports transformers with USE_TORCH=0, which hides transformers'
PyTorch classes in that process; the benchmark therefore starts

  USE_TORCH=1 python -m torch_reference.clip_worker WORK_DIR

WORK_DIR holds config.json (CLIPConfig kwargs), tokenizer/, pixels.npy
((N, S, S, 3) preprocessed images), texts.json and settings.json
({"seed", "image_batch", "text_batch"}). The worker builds a random
CLIPModel, saves it to WORK_DIR/model (safetensors, so Flax loads the same
weights), prints "@@ ready", then answers one command per stdin line with
one "@@ <json>" line, so that the benchmark can alternate PyTorch and JAX
passes (the machine's cores are shared; alternating spreads the noise):

  warmup -> {"image_s", "text_s"} for one batch of each
  images / text -> {"s"}: seconds for all images / texts
  save -> writes L2-normalised image_emb, text_emb to torch_emb.npz
  info -> {"torch_version", "torch_threads"}
  quit
"""

import json
import os
import sys
import time

import numpy as np
import torch
import transformers

from torch_reference import worker as worker_lib


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


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

  def tokens(batch):
    return tokenizer(batch, padding=True, truncation=True,
                     max_length=max_length, return_tensors="pt")

  @torch.no_grad()
  def images(n=len(pixels)):
    out = [model.get_image_features(pixel_values=pixels[i:min(i + ib, n)])
           for i in range(0, n, ib)]
    out = torch.cat(out)
    return out / out.norm(dim=-1, keepdim=True)

  @torch.no_grad()
  def text(n=len(texts)):
    out = [model.get_text_features(**tokens(texts[i:min(i + tb, n)]))
           for i in range(0, n, tb)]
    out = torch.cat(out)
    return out / out.norm(dim=-1, keepdim=True)

  def save():
    np.savez(os.path.join(work_dir, "torch_emb.npz"),
             image_emb=images().numpy(), text_emb=text().numpy())
    return "saved"

  worker_lib.serve({
      "warmup": lambda: {
          "image_s": _timed(lambda: images(min(ib, len(pixels))))[1],
          "text_s": _timed(lambda: text(min(tb, len(texts))))[1]},
      "images": lambda: {"s": _timed(images)[1]},
      "text": lambda: {"s": _timed(text)[1]},
      "save": save,
      "info": lambda: {"torch_version": torch.__version__,
                       "torch_threads": torch.get_num_threads()},
  })


if __name__ == "__main__":
  main(sys.argv[1])
