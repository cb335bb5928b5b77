"""The accelerator suite's PyTorch side: the same towers from the same files.

benchmarks/accelerator.py starts this module once, as

  USE_TORCH=1 python -m torch_reference.accelerator_towers SETTINGS OUT

SETTINGS (JSON): {"photos": [paths], "concepts": [str], "target_model":
"resnet18" | "resnet50", "target_size": its input side (224), "layers":
[torchvision module names], "clip_config": CLIPConfig kwargs, "tokenizer_dir", "batch_size",
"text_batch", "num_workers", "dtypes": ["bfloat16", "float32", ...],
"seed", "time_left_s"}. It writes OUT (JSON): {"torch_version",
"torchvision_version", "transformers_version", "device", "device_name",
"float32_matmul_precision", "passes": [one per dtype: {"dtype",
"stages": {stage: {"seconds", "images" | "texts", "images_per_s" |
"texts_per_s", "input_wait_s"}}, "peak_memory_bytes"}], "skipped":
[dtypes left out for lack of time]}.

What a pass does, on the GPU when there is one (else the CPU): random
torchvision ResNet and transformers CLIPModel weights (seeded, made
once), cast to the pass's dtype (parameters cast, inputs cast: what
jax_dissect's compute_dtype does); a DataLoader with `num_workers`
processes decodes and preprocesses the JPEG files (torchvision's ImageNet
eval transform for the target, CLIP's for the image tower) into pinned
memory while the model runs; forward hooks average each layer's output
over space (a (B, C) output is kept); CLIP's text tower embeds the
concepts in batches padded to their longest text. `input_wait_s` is the
time spent waiting for the next decoded batch. float32 matrix products
may use TF32 ("high"), as XLA's default precision on NVIDIA GPUs does.
"""

import copy
import json
import sys
import time

import torch
import torchvision
import transformers

from torch_reference import photos

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16,
           "float16": torch.float16}


def _sync(device):
  if device.type == "cuda":
    torch.cuda.synchronize(device)


def _image_stage(paths, transform, settings, device, dtype, fn,
                 memory_format=torch.contiguous_format):
  """Runs fn(batch) over the files; seconds, images/s and input waits."""
  loader = torch.utils.data.DataLoader(
      photos.Photos(paths, transform), batch_size=settings["batch_size"],
      num_workers=settings["num_workers"], shuffle=False,
      pin_memory=device.type == "cuda")
  wait = 0.0
  start = time.perf_counter()
  batches = iter(loader)
  while True:
    t0 = time.perf_counter()
    try:
      batch = next(batches)
    except StopIteration:
      break
    wait += time.perf_counter() - t0
    fn(batch.to(device, non_blocking=True).to(
        dtype, memory_format=memory_format))
  _sync(device)
  seconds = time.perf_counter() - start
  return {"seconds": seconds, "images": len(paths),
          "images_per_s": len(paths) / seconds, "input_wait_s": wait}


def _pass(target, clip, tokenizer, settings, device, dtype_name):
  """One pass of both towers in one dtype; its stage records."""
  dtype = _DTYPES[dtype_name]
  # Copies: the float32 masters stay unrounded for the next pass.
  target = copy.deepcopy(target).to(dtype)
  clip = copy.deepcopy(clip).to(dtype)
  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats(device)
  stages = {}
  with torch.no_grad():
    pooled = {layer: [] for layer in settings["layers"]}
    modules = dict(target.named_modules())
    hooks = [modules[layer].register_forward_hook(
        lambda _, __, out, layer=layer: pooled[layer].append(
            out.float().mean(dim=(2, 3)) if out.ndim == 4 else out.float()))
             for layer in settings["layers"]]
    try:
      stages["activations"] = _image_stage(
          settings["photos"], photos.imagenet_transform(settings["target_size"]),
          settings, device, dtype, target,
          torch.channels_last if device.type == "cuda"
          else torch.contiguous_format)
    finally:
      for hook in hooks:
        hook.remove()
    for layer in pooled:  # To the host, as the JAX side stores A.
      pooled[layer] = torch.cat(pooled[layer]).cpu()
    image_emb = []
    size = clip.config.vision_config.image_size
    stages["clip_images"] = _image_stage(
        settings["photos"], photos.clip_transform(size), settings, device, dtype,
        lambda batch: image_emb.append(
            clip.get_image_features(pixel_values=batch).float()))
    concepts, tb = settings["concepts"], settings["text_batch"]
    start = time.perf_counter()
    text_emb = []
    for i in range(0, len(concepts), tb):
      tokens = tokenizer(
          concepts[i:i + tb], padding=True, truncation=True,
          max_length=clip.config.text_config.max_position_embeddings,
          return_tensors="pt").to(device)
      text_emb.append(clip.get_text_features(**tokens).float())
    _sync(device)
    seconds = time.perf_counter() - start
    stages["clip_text"] = {"seconds": seconds, "texts": len(concepts),
                           "texts_per_s": len(concepts) / seconds}
    image_emb = torch.cat(image_emb)
    text_emb = torch.cat(text_emb)
  peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
          else None)
  return {"dtype": dtype_name, "stages": stages, "peak_memory_bytes": peak,
          "image_embeddings": list(image_emb.shape),
          "text_embeddings": list(text_emb.shape)}


def main(settings_path, out_path):
  start = time.perf_counter()
  with open(settings_path, encoding="utf-8") as f:
    settings = json.load(f)
  torch.set_float32_matmul_precision("high")
  device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
  torch.manual_seed(settings["seed"])
  target = getattr(torchvision.models, settings["target_model"])(
      weights=None).eval().to(device)
  if device.type == "cuda":
    target = target.to(memory_format=torch.channels_last)
  tokenizer = transformers.CLIPTokenizerFast.from_pretrained(
      settings["tokenizer_dir"])
  clip = transformers.CLIPModel(transformers.CLIPConfig(
      **settings["clip_config"])).eval().to(device)
  out = {"torch_version": torch.__version__,
         "torchvision_version": torchvision.__version__,
         "transformers_version": transformers.__version__,
         "device": device.type,
         "device_name": (torch.cuda.get_device_name(device)
                         if device.type == "cuda" else "cpu"),
         "float32_matmul_precision": torch.get_float32_matmul_precision(),
         "num_workers": settings["num_workers"],
         "passes": [], "skipped": []}
  for dtype_name in settings["dtypes"]:
    if time.perf_counter() - start > settings["time_left_s"]:
      out["skipped"].append(dtype_name)
      continue
    out["passes"].append(_pass(target, clip, tokenizer, settings, device,
                               dtype_name))
  with open(out_path, "w", encoding="utf-8") as f:
    json.dump(out, f)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2])
