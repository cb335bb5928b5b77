"""Reference ViT hidden states from transformers' PyTorch ViT.

Run by tests/models/test_vit.py in a subprocess with USE_TORCH=1 (the library
imports transformers with USE_TORCH=0):

  USE_TORCH=1 python torch_reference/vit.py WORK_DIR

WORK_DIR holds config.json (ViTConfig kwargs) and pixels.npy ((N, S, S, 3)
preprocessed images). Writes a random ViTForImageClassification (seed 0) to
WORK_DIR/model (save_pretrained, model.safetensors) and reference.npz with
hidden_{i} = the output of block i, (N, T, C), and logits (N, num_labels).
"""

import json
import os
import sys

import numpy as np
import torch
import transformers


def main(work_dir):
  with open(os.path.join(work_dir, "config.json"), encoding="utf-8") as f:
    config = transformers.ViTConfig(**json.load(f))
  torch.manual_seed(0)
  model = transformers.ViTForImageClassification(config).eval()
  model.save_pretrained(os.path.join(work_dir, "model"),
                        safe_serialization=True)
  pixels = torch.from_numpy(np.load(os.path.join(work_dir, "pixels.npy")))
  with torch.no_grad():
    out = model(pixel_values=pixels.permute(0, 3, 1, 2),
                output_hidden_states=True)
  # hidden_states[0] is the embeddings, hidden_states[i + 1] block i's output.
  arrays = {f"hidden_{i}": h.numpy()
            for i, h in enumerate(out.hidden_states[1:])}
  np.savez(os.path.join(work_dir, "reference.npz"), logits=out.logits.numpy(),
           **arrays)


if __name__ == "__main__":
  main(sys.argv[1])
