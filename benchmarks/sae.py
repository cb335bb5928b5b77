"""SAE training throughput: jax_dissect.features on 1 and n host devices
against a straightforward PyTorch TopK SAE, same hyper-parameters, same CPU.
(jax_dissect.features is the library of the analysis `features`,
jax_dissect/analyses/features/; its training is what the analysis runs
per layer.)

Each measurement runs in a fresh spawned process (its own peak RSS):

- `jax`: features.train_sae on the CPU with XLA_FLAGS
  --xla_force_host_platform_device_count=n set in the process before jax is
  imported (n = 1 or the `devices` given), `devices=n`. One short run
  (2 steps) compiles the step first; the timed run then trains `steps`
  steps; seconds = its config["train_seconds"] (the training loop: row
  shuffling, batches, steps; not the normalisation sample or the final fit
  pass).
- `torch`: the same model and update written plainly in PyTorch (nn
  Parameters, torch.topk, scatter, AuxK on the dead latents, Adam with the
  same betas/eps, gradient clipping, decoder gradient projection and row
  renormalisation), torch.set_num_threads(os.cpu_count()), batches cut
  from a random permutation of the in-memory rows; 2 untimed warm-up steps,
  then `steps` timed steps.

Data: rows = steps * batch_size rows of a planted sparse mixture
(4 * width concepts, each present with probability 8 / (4 * width), random
unit directions, N(0, 0.02) noise), float32.

Records: {"impl": "jax" | "torch", "devices" (jax), "threads" (torch),
"rows", "width", "num_features", "k", "k_aux", "batch_size", "steps",
"seconds", "rows_per_s", "final_mse", "peak_rss_mb", "loadavg_before",
"loadavg_after"}, then per size a "ratios" record with each jax device
count's rows_per_s over torch's.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import resource
import time
from typing import Any, Iterator, Sequence

import numpy as np

PRESETS = {
    # (width C, num_features F, k, batch_size, steps)
    "full": {"sizes": [(512, 4096, 32, 4096, 20),
                       (2048, 16384, 32, 4096, 10)],
             "devices": [1, 8]},
    "quick": {"sizes": [(64, 256, 8, 512, 10)], "devices": [1, 8]},
}
LR = 1e-3
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 6.25e-10
CLIP_NORM = 1.0
AUX_COEF = 1.0 / 32.0


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_rows(rows: int, width: int, seed: int = 0) -> np.ndarray:
  """(rows, width) float32 planted sparse mixture (see the module doc)."""
  rng = np.random.default_rng(seed)
  m = 4 * width
  d = rng.standard_normal((m, width)).astype(np.float32)
  d /= np.linalg.norm(d, axis=1, keepdims=True)
  out = np.empty((rows, width), np.float32)
  for lo in range(0, rows, 4096):
    hi = min(rows, lo + 4096)
    on = rng.random((hi - lo, m)) < 8.0 / m
    s = (on * rng.uniform(0.5, 1.5, on.shape)).astype(np.float32)
    out[lo:hi] = s @ d + 0.02 * rng.standard_normal((hi - lo, width),
                                                     dtype=np.float32)
  return out


def _hyper(width: int, num_features: int, k: int, batch: int) -> dict:
  return {"k": k, "k_aux": min(num_features, max(1, width // 2)),
          "batch_size": batch, "lr": LR, "aux_coef": AUX_COEF,
          "dead_after": 64 * batch}


# ----------------------------------------------------------------------------
# The JAX side (runs in a spawned process).
# ----------------------------------------------------------------------------


def _jax_case(size: tuple, devices: int, queue) -> None:
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                 os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = (
      f"{flags} --xla_force_host_platform_device_count={devices}").strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  from jax_dissect import features  # pylint: disable=g-import-not-at-top
  width, f, k, batch, steps = size
  x = make_rows(steps * batch, width)
  hyper = _hyper(width, f, k, batch)
  load_before = os.getloadavg()
  features.train_sae(x[:2 * batch], f, devices=devices, max_steps=2,
                     **hyper)  # Compiles the step.
  sae = features.train_sae(x, f, devices=devices, max_steps=steps, epochs=1,
                           **hyper)
  seconds = sae.config["train_seconds"]
  queue.put({"impl": "jax", "devices": devices,
             "rows": sae.config["rows_seen"], "seconds": seconds,
             "rows_per_s": sae.config["rows_seen"] / seconds,
             "final_mse": sae.fit["final_mse"],
             "peak_rss_mb": round(_peak_rss_mb(), 1),
             "loadavg_before": load_before,
             "loadavg_after": os.getloadavg()})


# ----------------------------------------------------------------------------
# The PyTorch side (runs in a spawned process).
# ----------------------------------------------------------------------------


def torch_topk_sae_step(torch, params, opt, x, since, *, k, k_aux, aux_coef,
                        dead_after):
  """One training step of the plain PyTorch TopK SAE (in place).

  Args:
    torch: the torch module.
    params: dict of tensors w_enc (C, F), b_enc (F,), w_dec (F, C), b_pre (C,)
      with requires_grad.
    opt: torch.optim.Adam over them.
    x: (B, C) normalised rows.
    since: (F,) int64 rows since each latent fired (updated in place).
    k, k_aux, aux_coef, dead_after: as in jax_dissect.features.

  Returns:
    The reconstruction MSE (float).
  """
  w_enc, b_enc, w_dec, b_pre = (params[n] for n in
                                ("w_enc", "b_enc", "w_dec", "b_pre"))
  pre = (x - b_pre) @ w_enc + b_enc
  vals, idx = torch.topk(pre, k, dim=1)
  codes = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
  err = x - (codes @ w_dec + b_pre)
  row_sq = (err * err).sum(dim=1)
  mse = row_sq.sum() / (x.shape[0] * x.shape[1])
  loss = mse
  dead = since >= dead_after
  if bool(dead.any()):
    pre_aux = (x - b_pre.detach()) @ w_enc + b_enc
    masked = pre_aux.masked_fill(~dead, float("-inf"))
    kk = min(k_aux, int(dead.sum()))
    a_vals, a_idx = torch.topk(masked, kk, dim=1)
    aux_codes = torch.zeros_like(pre).scatter(1, a_idx, torch.relu(a_vals))
    e = err.detach()
    aux = ((e - aux_codes @ w_dec) ** 2).sum() / row_sq.detach().sum()
    loss = loss + aux_coef * aux
  opt.zero_grad(set_to_none=True)
  loss.backward()
  with torch.no_grad():
    g = w_dec.grad
    g -= (g * w_dec).sum(dim=1, keepdim=True) * w_dec
  torch.nn.utils.clip_grad_norm_(list(params.values()), CLIP_NORM)
  opt.step()
  with torch.no_grad():
    w_dec /= w_dec.norm(dim=1, keepdim=True)
    fired = (codes > 0).any(dim=0)
    since.add_(x.shape[0]).clamp_(max=dead_after)
    since[fired] = 0
  return mse.item()


def _torch_case(size: tuple, queue) -> None:
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  torch.manual_seed(0)
  width, f, k, batch, steps = size
  hyper = _hyper(width, f, k, batch)
  x = make_rows(steps * batch, width)
  load_before = os.getloadavg()
  mean = x.mean(axis=0)
  scale = math.sqrt(float(((x - mean) ** 2).sum(axis=1).mean()) / width)
  xt = torch.from_numpy((x - mean) / scale)
  w_dec = torch.randn(f, width)
  w_dec /= w_dec.norm(dim=1, keepdim=True)
  params = {"w_enc": w_dec.T.clone().requires_grad_(),
            "b_enc": torch.zeros(f, requires_grad=True),
            "w_dec": w_dec.clone().requires_grad_(),
            "b_pre": torch.zeros(width, requires_grad=True)}
  opt = torch.optim.Adam(list(params.values()), lr=hyper["lr"],
                         betas=ADAM_BETAS, eps=ADAM_EPS)
  since = torch.zeros(f, dtype=torch.int64)
  kw = {n: hyper[n] for n in ("k", "k_aux", "aux_coef", "dead_after")}
  for _ in range(2):  # Warm-up, not timed.
    torch_topk_sae_step(torch, params, opt, xt[:batch], since, **kw)
  start = time.perf_counter()
  order = torch.randperm(xt.shape[0])
  mse = None
  for s in range(steps):
    rows = xt[order[s * batch:(s + 1) * batch]]
    mse = torch_topk_sae_step(torch, params, opt, rows, since, **kw)
  seconds = time.perf_counter() - start
  queue.put({"impl": "torch", "threads": torch.get_num_threads(),
             "rows": steps * batch, "seconds": seconds,
             "rows_per_s": steps * batch / seconds, "final_mse": mse,
             "peak_rss_mb": round(_peak_rss_mb(), 1),
             "loadavg_before": load_before,
             "loadavg_after": os.getloadavg()})


def _spawned(target, *args) -> dict[str, Any]:
  ctx = multiprocessing.get_context("spawn")
  queue = ctx.Queue()
  proc = ctx.Process(target=target, args=args + (queue,))
  proc.start()
  try:
    out = queue.get(timeout=3600)
  finally:
    proc.join(timeout=60)
  if proc.exitcode not in (0, None):
    raise RuntimeError(f"benchmark case {target.__name__}{args} exited "
                       f"with {proc.exitcode}")
  return out


def run(sizes: Sequence[Sequence[int]] = PRESETS["quick"]["sizes"],
        devices: Sequence[int] = (1, 8), torch: bool = True
        ) -> Iterator[dict]:
  """Yields the records of the module doc for each size.

  Args:
    sizes: (width C, num_features F, k, batch_size, steps) tuples.
    devices: host device counts of the JAX runs.
    torch: also run the PyTorch baseline.
  """
  for size in sizes:
    size = tuple(int(v) for v in size)
    width, f, k, batch, steps = size
    common = {"width": width, "num_features": f, "k": k,
              "k_aux": _hyper(width, f, k, batch)["k_aux"],
              "batch_size": batch, "steps": steps}
    by_impl = {}
    for n in devices:
      rec = {**common, **_spawned(_jax_case, size, int(n))}
      by_impl[f"jax_{n}"] = rec["rows_per_s"]
      yield rec
    if torch:
      rec = {**common, **_spawned(_torch_case, size)}
      by_impl["torch"] = rec["rows_per_s"]
      yield rec
      yield {**common, "impl": "ratios",
             **{f"{name}_over_torch": v / rec["rows_per_s"]
                for name, v in by_impl.items() if name != "torch"}}
