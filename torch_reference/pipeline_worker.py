"""The original CLIP-Dissect pipeline's shape in PyTorch: a benchmark worker.

jax_dissect imports transformers with USE_TORCH=0 (hiding its PyTorch
classes), so the pipeline benchmark starts this worker as

  USE_TORCH=1 python -m torch_reference.pipeline_worker WORK_DIR

WORK_DIR/settings.json: {"photos": [paths], "concepts": [str],
"target_model": "resnet18" | "resnet50", "layers": [names], "clip_config":
CLIPConfig kwargs, "tokenizer_dir", "batch_size", "text_batch",
"num_workers", "seed"}. The worker makes random weights and saves them
for jax_dissect to load: WORK_DIR/target.safetensors (torchvision key
names) and WORK_DIR/clip (save_pretrained, with the tokenizer); then prints
"@@ ready" and answers one command per stdin line with one "@@ <json>":

  run -> {"stages_s", "total_s", "labels": {layer: [concept index]}}
  info -> {"torch_version", "torch_threads", "num_workers"}
  quit

A run is what the original program does, from files on disk: load both
models; for each of the target model and CLIP's image tower, a DataLoader
with worker processes decodes and preprocesses the photos (torchvision
transforms) while the model runs; forward hooks average each target
layer's output over space; CLIP's text tower embeds the concepts; P is the
cosine similarity of the normalised embeddings; soft_wpmi (the original's
per-neuron loop, _original_torch.py) and an argmax per neuron give the
labels.
"""

import json
import os
import sys
import time

import safetensors.torch
import torch
import torchvision
import transformers

from torch_reference import original as original_torch
from torch_reference import photos
from torch_reference import worker as worker_lib


def _make_weights(work_dir, settings):
  """Random target and CLIP weights, saved where jax_dissect loads them."""
  torch.manual_seed(settings["seed"])
  target = getattr(torchvision.models, settings["target_model"])(weights=None)
  safetensors.torch.save_file(
      {k: v.contiguous() for k, v in target.state_dict().items()},
      os.path.join(work_dir, "target.safetensors"))
  tokenizer = transformers.CLIPTokenizerFast.from_pretrained(
      settings["tokenizer_dir"])
  config = transformers.CLIPConfig(**settings["clip_config"])
  clip = transformers.CLIPModel(config)
  clip.save_pretrained(os.path.join(work_dir, "clip"))
  tokenizer.save_pretrained(os.path.join(work_dir, "clip"))


def _loader(paths, transform, settings):
  return torch.utils.data.DataLoader(
      photos.Photos(paths, transform), batch_size=settings["batch_size"],
      num_workers=settings["num_workers"], shuffle=False)


def _run(work_dir, settings):
  """One pass of the original pipeline; seconds per stage and labels."""
  stages = {}
  start = last = time.perf_counter()

  def stage(name):
    nonlocal last
    now = time.perf_counter()
    stages[name] = now - last
    last = now

  paths, concepts = settings["photos"], settings["concepts"]
  target = getattr(torchvision.models, settings["target_model"])(weights=None)
  target.load_state_dict(safetensors.torch.load_file(
      os.path.join(work_dir, "target.safetensors")))
  target.eval()
  stage("target_load")
  clip = transformers.CLIPModel.from_pretrained(
      os.path.join(work_dir, "clip")).eval()
  tokenizer = transformers.CLIPTokenizerFast.from_pretrained(
      os.path.join(work_dir, "clip"))
  stage("clip_load")

  with torch.no_grad():
    pooled = {layer: [] for layer in settings["layers"]}
    modules = dict(target.named_modules())
    hooks = [modules[layer].register_forward_hook(
        lambda _, __, out, layer=layer: pooled[layer].append(
            out.mean(dim=(2, 3)) if out.ndim == 4 else out))
             for layer in settings["layers"]]
    for batch in _loader(paths, photos.imagenet_transform(), settings):
      target(batch)
    for hook in hooks:
      hook.remove()
    acts = {layer: torch.cat(v) for layer, v in pooled.items()}
    stage("activations")

    size = clip.config.vision_config.image_size
    image_emb = torch.cat([
        clip.get_image_features(pixel_values=batch)
        for batch in _loader(paths, photos.clip_transform(size), settings)])
    stage("clip_images")
    tb = settings["text_batch"]
    text_emb = torch.cat([
        clip.get_text_features(**tokenizer(
            concepts[i:i + tb], padding=True, truncation=True,
            max_length=clip.config.text_config.max_position_embeddings,
            return_tensors="pt"))
        for i in range(0, len(concepts), tb)])
    stage("clip_text")
    image_emb = image_emb / image_emb.norm(dim=-1, keepdim=True)
    text_emb = text_emb / text_emb.norm(dim=-1, keepdim=True)
    p = image_emb @ text_emb.T
    stage("concept_activations")
    labels = {}
    for layer, a in acts.items():
      s = original_torch.soft_wpmi(a, p, top_k=min(100, len(paths)))
      labels[layer] = s.argmax(dim=1).tolist()
    stage("similarity")
  return {"stages_s": stages, "total_s": time.perf_counter() - start,
          "labels": labels}


def main(work_dir):
  with open(os.path.join(work_dir, "settings.json"), encoding="utf-8") as f:
    settings = json.load(f)
  _make_weights(work_dir, settings)
  worker_lib.serve({
      "run": lambda: _run(work_dir, settings),
      "info": lambda: {"torch_version": torch.__version__,
                       "torch_threads": torch.get_num_threads(),
                       "num_workers": settings["num_workers"]},
  })


if __name__ == "__main__":
  main(sys.argv[1])
