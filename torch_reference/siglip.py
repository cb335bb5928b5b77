"""Reference SigLIP embeddings from transformers' PyTorch models.

Run by tests/test_siglip.py in a subprocess with USE_TORCH=1 (the library
imports transformers with USE_TORCH=0, so its PyTorch classes cannot be
used in the test process itself):

  USE_TORCH=1 python torch_reference/siglip.py WORK_DIR

WORK_DIR/specs.json is a list of models, each {"name", "model_type"
("siglip" or "siglip2"), "config" (text_config and vision_config kwargs),
"seed", "tokenizer_dir" (a saved SiglipTokenizer), "processor"
(image-processor kwargs), "photos" (image paths), "texts"}. For each, a
random SiglipModel / Siglip2Model (seeded; every weight then perturbed by
N(0, 0.05^2) noise, so layer-norm scales, biases and the probe are not
their trivial initial values) is saved with safetensors to WORK_DIR/NAME
with its tokenizer and image processor, and WORK_DIR/NAME.npz gets:

  pixels (3, S, S, 3), ids (4, L): random inputs;
  image_emb, text_emb: their unnormalised embeddings (get_image_features,
    get_text_features);
  proc_pixels (N, S, S, 3), proc_ids (T, L): the processor's outputs for
    the photos (for siglip2 cropped to their top-left square, as Siglip2's
    NaFlex processor only agrees with a fixed grid on square images) and
    the texts with padding="max_length" and truncation;
  proc_image_emb, proc_text_emb: their embeddings.
"""

import json
import os
import sys

import numpy as np
from PIL import Image
import torch
import transformers


def _square(img):
  side = min(img.size)
  return img.crop((0, 0, side, side))


def _patchify(pixels, patch):
  """(B, S, S, C) -> (B, (S/p)^2, p*p*C), rows of (row, column, channel)."""
  b, s, _, c = pixels.shape
  g = s // patch
  x = pixels.reshape(b, g, patch, g, patch, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * g, patch * patch * c)


def _unpatchify(patches, patch, channels):
  b, n, _ = patches.shape
  g = int(round(n ** 0.5))
  x = patches.reshape(b, g, g, patch, patch, channels).transpose(
      0, 1, 3, 2, 4, 5)
  return x.reshape(b, g * patch, g * patch, channels)


def _image_features(model, spec, pixels):
  vision = spec["config"]["vision_config"]
  with torch.no_grad():
    if spec["model_type"] == "siglip":
      out = model.get_image_features(
          pixel_values=torch.from_numpy(pixels.transpose(0, 3, 1, 2)))
    else:
      patch = vision["patch_size"]
      patches = _patchify(pixels, patch)
      grid = pixels.shape[1] // patch
      out = model.get_image_features(
          pixel_values=torch.from_numpy(patches),
          pixel_attention_mask=torch.ones(patches.shape[:2], dtype=torch.long),
          spatial_shapes=torch.tensor([[grid, grid]] * len(pixels)))
  return out.numpy()


def _text_features(model, ids):
  with torch.no_grad():
    return model.get_text_features(
        input_ids=torch.from_numpy(ids.astype(np.int64))).numpy()


def run(spec, work_dir):
  out_dir = os.path.join(work_dir, spec["name"])
  cfg = spec["config"]
  if spec["model_type"] == "siglip":
    config = transformers.SiglipConfig(**cfg)
    model_cls = transformers.SiglipModel
  else:
    config = transformers.Siglip2Config(**cfg)
    model_cls = transformers.Siglip2Model
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  torch.manual_seed(spec["seed"])
  model = model_cls(config).eval()
  with torch.no_grad():
    for param in model.parameters():
      param.add_(0.05 * torch.randn_like(param))
  model.save_pretrained(out_dir, safe_serialization=True)

  vision = cfg["vision_config"]
  if spec["model_type"] == "siglip":
    side = vision["image_size"]
  else:
    side = int(round(vision["num_patches"] ** 0.5)) * vision["patch_size"]
  rng = np.random.default_rng(spec["seed"])
  pixels = rng.normal(size=(3, side, side, 3)).astype(np.float32)
  length = cfg["text_config"]["max_position_embeddings"]
  ids = rng.integers(0, cfg["text_config"]["vocab_size"], size=(4, length))
  result = {"pixels": pixels, "ids": ids.astype(np.int32),
            "image_emb": _image_features(model, spec, pixels),
            "text_emb": _text_features(model, ids)}

  tokenizer = transformers.SiglipTokenizer.from_pretrained(
      spec["tokenizer_dir"])
  photos = [Image.open(p).convert("RGB") for p in spec["photos"]]
  if spec["model_type"] == "siglip":
    image_processor = transformers.SiglipImageProcessor(**spec["processor"])
    processor = transformers.SiglipProcessor(
        image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(out_dir)
    # truncation=True: without it a text longer than the tokenizer's
    # model_max_length stays longer, and the model refuses it.
    inputs = processor(text=spec["texts"], images=photos,
                       padding="max_length", truncation=True,
                       return_tensors="np")
    proc_pixels = inputs["pixel_values"].transpose(0, 2, 3, 1)
    proc_ids = inputs["input_ids"]
  else:
    image_processor = transformers.Siglip2ImageProcessor(**spec["processor"])
    image_processor.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    inputs = image_processor([_square(p) for p in photos],
                             return_tensors="np")
    if not np.all(inputs["pixel_attention_mask"]):
      raise ValueError("Siglip2ImageProcessor padded a square image")
    proc_pixels = _unpatchify(inputs["pixel_values"], vision["patch_size"], 3)
    proc_ids = np.asarray(tokenizer(spec["texts"], padding="max_length",
                                    max_length=length, truncation=True)[
                                        "input_ids"])
  proc_pixels = proc_pixels.astype(np.float32)
  result.update(
      proc_pixels=proc_pixels, proc_ids=proc_ids.astype(np.int32),
      proc_image_emb=_image_features(model, spec, proc_pixels),
      proc_text_emb=_text_features(model, proc_ids))
  np.savez(os.path.join(work_dir, spec["name"] + ".npz"), **result)


def main(work_dir):
  with open(os.path.join(work_dir, "specs.json"), encoding="utf-8") as f:
    specs = json.load(f)
  for spec in specs:
    run(spec, work_dir)


if __name__ == "__main__":
  main(sys.argv[1])
