"""The original CLIP-Dissect similarity functions' structure, in PyTorch.

Comparators for the similarity benchmark: what a user of the original
PyTorch code runs, so that jax_dissect is raced against it rather than
against a loop written for the race. Each function follows the formulas of
DESIGN.md (as jax_dissect.similarity does) in the original's program shape:

  soft_wpmi, wpmi: Q = softmax(a P) once; the top_k images of every neuron
    from one topk over A's columns; then a Python loop over neurons that
    gathers the neuron's top_k rows of Q ((top_k, M)), takes the log of
    every factor and sums over the rows; finally the logsumexp prior over
    the neurons' (K, M) log-likelihoods.
  rank_reorder: a Python loop over neurons; per neuron, gather its top-n
    rows of P, rank them per concept with two argsorts, reorder the
    neuron's activations by those ranks (in blocks of concepts), and the
    baseline from 5 permutations.
  cos_similarity, cos_similarity_cubed: normalise (centre, cube) the
    columns of A and P, then a loop over blocks of 10,000 neurons x 10,000
    concepts, one matmul each (the original's cos kernels are blocked
    matmuls, not per-neuron loops).

Everything runs in torch on the CPU in float32 under torch.no_grad(); torch
is imported inside the functions (it is an optional extra). Inputs are
numpy or torch arrays, A (N, K) and P (N, M); outputs are (K, M) float32
torch tensors. rank_reorder takes its baseline permutations as an argument
(`similarity.rank_reorder_permutations`) so that it computes exactly the S
of jax_dissect; everything else is deterministic.

Two deliberate departures, both only at inputs outside the formulas'
domain, so that S equals jax_dissect's everywhere: the cos kernels divide
a dead (all-zero) column by float32's tiny instead of by 0, and
rank_reorder gives a neuron whose top activations are all equal S = 0 and
floors the mean P of the top images at float32's tiny.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

# The original cos kernels multiply blocks of this many neurons x concepts.
COS_BLOCK = 10000
# rank_reorder reorders the activations for this many concepts at a time.
RANK_REORDER_CONCEPT_BLOCK = 1500
_TINY = float(np.finfo(np.float32).tiny)


def _tensor(x: Any):
  import torch  # pylint: disable=g-import-not-at-top
  if isinstance(x, torch.Tensor):
    return x.to(torch.float32)
  return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


class _Stages:
  """Wall time of a function's stages, into a dict if one is given."""

  def __init__(self, timings: dict[str, float] | None):
    self.timings = timings
    self.start = time.perf_counter()

  def __call__(self, stage: str) -> None:
    if self.timings is not None:
      now = time.perf_counter()
      self.timings[stage] = self.timings.get(stage, 0.0) + now - self.start
      self.start = now


def _log_prior(ll):
  """prior[m] = logsumexp_k ll[k, m] - log K, as a (1, M) row."""
  import torch  # pylint: disable=g-import-not-at-top
  return torch.logsumexp(ll, dim=0, keepdim=True) - math.log(ll.shape[0])


def soft_wpmi(activations, concept_activations, *, top_k=100, a=10.0,
              lam=1.0, p_start=0.998, p_end=0.97, eps=1e-7, timings=None):
  """L[k] = sum_j log(1 + p_j (Q[I_kj] - 1) + eps), one neuron at a time.

  timings: a dict that gets the seconds of the stages "softmax", "top_k",
  "neuron_loop" and "prior", or None.
  """
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    stage = _Stages(timings)
    acts, p = _tensor(activations), _tensor(concept_activations)
    q = torch.softmax(a * p, dim=1)  # (N, M)
    stage("softmax")
    top = torch.topk(acts, k=top_k, dim=0).indices  # (top_k, K)
    stage("top_k")
    weight = (p_start - torch.arange(top_k, dtype=torch.float32) / top_k *
              (p_start - p_end)).unsqueeze(1)  # (top_k, 1)
    rows = []
    for k in range(acts.shape[1]):
      gathered = q.gather(0, top[:, k:k + 1].expand(-1, q.shape[1]))
      factors = 1 + weight * (gathered - 1)
      rows.append(torch.sum(torch.log(factors + eps), dim=0, keepdim=True))
    ll = torch.cat(rows, dim=0)  # (K, M)
    stage("neuron_loop")
    s = ll - lam * _log_prior(ll)
    stage("prior")
    return s


def wpmi(activations, concept_activations, *, top_k=28, a=2.0, lam=0.6,
         eps=1e-7, timings=None):
  """L[k] = sum_j log(Q[I_kj] + eps), one neuron at a time.

  timings: as soft_wpmi's.
  """
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    stage = _Stages(timings)
    acts, p = _tensor(activations), _tensor(concept_activations)
    q = torch.softmax(a * p, dim=1)
    stage("softmax")
    top = torch.topk(acts, k=top_k, dim=0).indices
    stage("top_k")
    rows = []
    for k in range(acts.shape[1]):
      gathered = q.gather(0, top[:, k:k + 1].expand(-1, q.shape[1]))
      rows.append(torch.sum(torch.log(gathered + eps), dim=0, keepdim=True))
    ll = torch.cat(rows, dim=0)
    stage("neuron_loop")
    s = ll - lam * _log_prior(ll)
    stage("prior")
    return s


def _blocked_product(a_hat, p_hat):
  """a_hat^T @ p_hat in blocks of COS_BLOCK neurons x COS_BLOCK concepts."""
  import torch  # pylint: disable=g-import-not-at-top
  out = []
  for k0 in range(0, a_hat.shape[1], COS_BLOCK):
    block = a_hat[:, k0:k0 + COS_BLOCK].T
    out.append(torch.cat([block @ p_hat[:, m0:m0 + COS_BLOCK]
                          for m0 in range(0, p_hat.shape[1], COS_BLOCK)],
                         dim=1))
  return torch.cat(out, dim=0)


def cos_similarity(activations, concept_activations):
  """S = A_hat^T P_hat with every column divided by its L2 norm."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    acts, p = _tensor(activations), _tensor(concept_activations)
    acts = acts / torch.clamp(torch.norm(acts, dim=0, keepdim=True), _TINY)
    p = p / torch.clamp(torch.norm(p, dim=0, keepdim=True), _TINY)
    return _blocked_product(acts, p)


def cos_similarity_cubed(activations, concept_activations, *, min_norm=1e-3):
  """Columns centred, cubed and divided by max(L2 norm, min_norm)."""
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    acts, p = _tensor(activations), _tensor(concept_activations)

    def prepare(x):
      x = (x - torch.mean(x, dim=0, keepdim=True)) ** 3
      return x / torch.clamp(torch.norm(x, dim=0, keepdim=True), min_norm)

    return _blocked_product(prepare(acts), prepare(p))


def rank_reorder(activations, concept_activations, *, permutations,
                 top_fraction=0.05, p=3.0, scale_p=0.5):
  """Rank-reorder similarity, one neuron at a time.

  Args:
    activations: (N, K) activations.
    concept_activations: (N, M) P.
    permutations: (K, 5, n) baseline permutations of range(n) per neuron,
      n = floor(N * top_fraction).
    top_fraction: fraction of images used per neuron.
    p: exponent of the errors.
    scale_p: exponent of the mean concept activation.

  Returns:
    (K, M) float32 torch tensor.
  """
  import torch  # pylint: disable=g-import-not-at-top
  with torch.no_grad():
    acts, pc = _tensor(activations), _tensor(concept_activations)
    perms = torch.from_numpy(np.array(permutations, dtype=np.int64))
    n = int(math.floor(acts.shape[0] * top_fraction))
    top_vals, top_idx = torch.topk(acts, k=n, dim=0)  # (n, K), descending.
    num_concepts = pc.shape[1]
    rows = []
    for k in range(acts.shape[1]):
      p_top = pc.gather(0, top_idx[:, k:k + 1].expand(-1, num_concepts))
      mean_p = torch.clamp(torch.mean(p_top, dim=0, keepdim=True), _TINY)
      # ranks[r, m]: rank of image r's P among the top images, per concept.
      ranks = torch.argsort(torch.argsort(p_top, dim=0), dim=0)
      target = top_vals[:, k:k + 1]  # (n, 1) descending.
      ascending = torch.flip(target, dims=[0])
      baseline = torch.mean(torch.stack([
          torch.mean(torch.abs(ascending[:, 0] - ascending[perm, 0]) ** p)
          for perm in perms[k]]))
      errors = []
      for m0 in range(0, num_concepts, RANK_REORDER_CONCEPT_BLOCK):
        r = ranks[:, m0:m0 + RANK_REORDER_CONCEPT_BLOCK]
        reordered = ascending.expand(-1, r.shape[1]).gather(0, r)
        errors.append(torch.mean(torch.abs(target - reordered) ** p, dim=0,
                                 keepdim=True))
      err = torch.cat(errors, dim=1)
      ratio = (err / baseline if baseline > 0 else torch.zeros_like(err))
      rows.append(-ratio / mean_p ** scale_p)
    return torch.cat(rows, dim=0)


FUNCTIONS = {
    "soft_wpmi": soft_wpmi,
    "wpmi": wpmi,
    "cos_similarity": cos_similarity,
    "cos_similarity_cubed": cos_similarity_cubed,
    "rank_reorder": rank_reorder,
}
