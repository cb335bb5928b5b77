"""PyTorch side of the SigLIP benchmark: a worker process driven over stdin.

jax_dissect imports transformers with USE_TORCH=0, which hides its PyTorch
classes in that process; benchmarks/siglip.py therefore starts

  USE_TORCH=1 python -m torch_reference.siglip_worker WORK_DIR

WORK_DIR holds settings.json ({"overrides": SiglipVisionConfig kwargs,
"seed", "dtype": "float32" | "bfloat16" | "float16", "device": "cpu" |
"cuda"}) and pixels.npy ((B, S, S, 3) float32). The worker builds a random
SiglipVisionModel (seeded), saves it to WORK_DIR/torch_model (safetensors,
so the Flax tower loads the same weights), prints "@@ ready", then answers
one command per stdin line with one "@@ <json>" line (torch_reference.worker),
so the benchmark can alternate PyTorch and JAX passes:

  warmup -> {"s"}: the first pass (kernel selection, allocation)
  time   -> {"s"}: seconds of one pass over the batch
  save   -> writes the pooled embeddings (float32) to torch_out.npy
  info   -> {"torch_version", "torch_threads", "device"}
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


def main(work_dir):
  with open(os.path.join(work_dir, "settings.json"), encoding="utf-8") as f:
    settings = json.load(f)
  config = transformers.SiglipVisionConfig(**settings["overrides"])
  config._attn_implementation = "sdpa"  # pylint: disable=protected-access
  torch.manual_seed(settings["seed"])
  model = transformers.SiglipVisionModel(config).eval()
  model.save_pretrained(os.path.join(work_dir, "torch_model"),
                        safe_serialization=True)
  device = settings["device"]
  dtype = getattr(torch, settings["dtype"])
  model = model.to(device=device, dtype=dtype)
  pixels = torch.from_numpy(
      np.load(os.path.join(work_dir, "pixels.npy")).transpose(0, 3, 1, 2)
  ).to(device=device, dtype=dtype)

  @torch.no_grad()
  def forward():
    out = model(pixel_values=pixels).pooler_output
    if device == "cuda":
      torch.cuda.synchronize()
    return out

  def timed():
    start = time.perf_counter()
    forward()
    return {"s": time.perf_counter() - start}

  def save():
    np.save(os.path.join(work_dir, "torch_out.npy"),
            forward().float().cpu().numpy())
    return "saved"

  worker_lib.serve({
      "warmup": timed, "time": timed, "save": save,
      "info": lambda: {"torch_version": torch.__version__,
                       "torch_threads": torch.get_num_threads(),
                       "device": device},
  })


if __name__ == "__main__":
  main(sys.argv[1])
