"""Per-neuron numpy references of the five kernels, written straight from
the formulas of docs/design.md, and random inputs for them."""

import numpy as np


def _softmax(x):
  x = x - x.max(axis=1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=1, keepdims=True)


def _logsumexp(x, axis):
  mx = x.max(axis=axis)
  return mx + np.log(np.exp(x - np.expand_dims(mx, axis)).sum(axis=axis))


def ref_soft_wpmi(a, p, top_k=100, alpha=10.0, lam=1.0, p_start=0.998,
                  p_end=0.97, eps=1e-7):
  a, p = a.astype(np.float64), p.astype(np.float64)
  q = _softmax(alpha * p)
  k_total = a.shape[1]
  ll = np.zeros((k_total, p.shape[1]))
  for k in range(k_total):
    idx = np.argsort(-a[:, k], kind="stable")[:top_k]
    for j, i in enumerate(idx):
      pj = p_start - (j / top_k) * (p_start - p_end)
      ll[k] += np.log(1 + pj * (q[i] - 1) + eps)
  prior = _logsumexp(ll, 0) - np.log(k_total)
  return ll - lam * prior


def ref_wpmi(a, p, top_k=28, alpha=2.0, lam=0.6, eps=1e-7):
  a, p = a.astype(np.float64), p.astype(np.float64)
  q = _softmax(alpha * p)
  ll = np.zeros((a.shape[1], p.shape[1]))
  for k in range(a.shape[1]):
    idx = np.argsort(-a[:, k], kind="stable")[:top_k]
    ll[k] = np.log(q[idx] + eps).sum(axis=0)
  prior = _logsumexp(ll, 0) - np.log(a.shape[1])
  return ll - lam * prior


def ref_cos(a, p):
  a, p = a.astype(np.float64), p.astype(np.float64)
  out = np.zeros((a.shape[1], p.shape[1]))
  for k in range(a.shape[1]):
    ak = a[:, k] / max(np.linalg.norm(a[:, k]), 1e-38)
    for m in range(p.shape[1]):
      out[k, m] = ak @ (p[:, m] / np.linalg.norm(p[:, m]))
  return out


def ref_cos_cubed(a, p, min_norm=1e-3):
  def norm(x):
    x = (x - x.mean()) ** 3
    return x / max(np.linalg.norm(x), min_norm)
  a, p = a.astype(np.float64), p.astype(np.float64)
  out = np.zeros((a.shape[1], p.shape[1]))
  for k in range(a.shape[1]):
    for m in range(p.shape[1]):
      out[k, m] = norm(a[:, k]) @ norm(p[:, m])
  return out


def ref_rank_reorder(a, p, perms, top_fraction=0.05, power=3.0, scale_p=0.5):
  """perms: (K, 5, n) baseline permutations per neuron."""
  a, p = a.astype(np.float64), p.astype(np.float64)
  n = int(np.floor(a.shape[0] * top_fraction))
  out = np.zeros((a.shape[1], p.shape[1]))
  for k in range(a.shape[1]):
    idx = np.argsort(-a[:, k], kind="stable")[:n]
    acts = a[idx, k]  # descending
    asc = acts[::-1]
    baseline = np.mean([np.mean(np.abs(asc - asc[perm]) ** power)
                        for perm in perms[k]])
    for m in range(p.shape[1]):
      pk = p[idx, m]
      ranks = np.argsort(np.argsort(pk, kind="stable"), kind="stable")
      reordered = asc[ranks]
      err = np.mean(np.abs(acts - reordered) ** power)
      out[k, m] = -(err / baseline) / np.mean(pk) ** scale_p
  return out


def random_inputs(n, k, m, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.permutation(n * k).reshape(n, k).astype(np.float32) / (n * k)
  a = a + rng.normal(size=(n, k)).astype(np.float32) * 1e-3
  p = rng.uniform(0.05, 0.4, size=(n, m)).astype(np.float32)
  return a, p
