"""Weight analysis (paper section 5): do strong connections join similar labels?

For two consecutive layers (e.g. layer4 -> fc) with weights W (K_in, K_out)
(Flax's Dense kernel layout; W[i, j] connects input neuron i to output neuron
j), compare each weight with the cosine similarity of the two neurons'
labels in a text-embedding space. Pearson's r and its two-sided p-value are
reported over all weights and over the top-n weights (largest values, or
largest |values|), and a scatter plot is drawn.

Conv kernels (kh, kw, C_in, C_out) are reduced over space first (mean by
default), giving the (C_in, C_out) connection strength of two channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import os
from typing import Any

import numpy as np
from scipy import stats

from jax_dissect.clip import text_embed

REDUCTIONS = ("mean", "sum", "max_abs")


def connection_matrix(weights: np.ndarray, reduce: str = "mean") -> np.ndarray:
  """(K_in, K_out) connection strengths from a Dense or conv kernel.

  Args:
    weights: (K_in, K_out) dense kernel, or (kh, kw, C_in, C_out) conv kernel
      (Flax layout; transpose PyTorch's (out, in[, kh, kw]) first).
    reduce: how a conv kernel is reduced over its spatial axes: one of
      REDUCTIONS ("max_abs" keeps the signed entry of largest magnitude).

  Returns:
    float64 (K_in, K_out).
  """
  w = np.asarray(weights, np.float64)
  if w.ndim == 2:
    return w
  if w.ndim != 4:
    raise ValueError(f"weights must be (K_in, K_out) or (kh, kw, C_in, C_out);"
                     f" got shape {w.shape}")
  if reduce == "mean":
    return w.mean(axis=(0, 1))
  if reduce == "sum":
    return w.sum(axis=(0, 1))
  if reduce == "max_abs":
    flat = w.reshape(-1, *w.shape[2:])
    pick = np.argmax(np.abs(flat), axis=0)
    return np.take_along_axis(flat, pick[None], 0)[0]
  raise ValueError(f"reduce={reduce!r}; allowed: {list(REDUCTIONS)}")


def label_similarity_matrix(labels_in: Sequence[str],
                            labels_out: Sequence[str],
                            text_embed_fn: text_embed.TextEmbedFn
                            ) -> np.ndarray:
  """Cosine of every input label with every output label: (K_in, K_out)."""
  emb = text_embed.embed_unique(text_embed_fn,
                                list(labels_in) + list(labels_out))
  return emb[:len(labels_in)] @ emb[len(labels_in):].T


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
    return float("nan"), float("nan")
  r, p = stats.pearsonr(x, y)
  return float(r), float(p)


def weight_label_correlation(weights: np.ndarray, label_cosine: np.ndarray, *,
                             top_n: int = 1000, by_abs: bool = False
                             ) -> dict[str, Any]:
  """Pearson correlation of connection weights with label similarity.

  Args:
    weights: (K_in, K_out) connection strengths.
    label_cosine: (K_in, K_out) cosine of the connected neurons' labels.
    top_n: size of the subset of strongest weights (clipped to the count).
    by_abs: rank weights by |w| for the subset (default: by w, i.e. the most
      excitatory connections, as in the paper).

  Returns:
    dict with r, p_value, n (all weights), and top_n, r_top, p_value_top,
    mean_cosine_top, mean_cosine_all.
  """
  w = np.asarray(weights, np.float64)
  c = np.asarray(label_cosine, np.float64)
  if w.shape != c.shape or w.ndim != 2:
    raise ValueError(f"weights {w.shape} and label_cosine {c.shape} must both "
                     "be (K_in, K_out)")
  if top_n < 3:
    raise ValueError(f"top_n must be >= 3 for a correlation; got {top_n}")
  w, c = w.ravel(), c.ravel()
  r, p = _pearson(w, c)
  n_top = min(int(top_n), w.size)
  order = np.argsort(-(np.abs(w) if by_abs else w), kind="stable")[:n_top]
  r_top, p_top = _pearson(w[order], c[order])
  return {"r": r, "p_value": p, "n": int(w.size), "top_n": n_top,
          "top_by_abs": bool(by_abs), "r_top": r_top, "p_value_top": p_top,
          "mean_cosine_top": float(c[order].mean()),
          "mean_cosine_all": float(c.mean())}


def top_k_curve(weights: np.ndarray, label_cosine: np.ndarray,
                ks: Sequence[int] | None = None, *, by_abs: bool = False
                ) -> list[dict[str, Any]]:
  """Mean label cosine of the k strongest weights, as k grows (paper Fig. 6b).

  Args:
    weights: (K_in, K_out) connection strengths.
    label_cosine: (K_in, K_out) cosine of the connected neurons' concepts.
    ks: the k values; default 1, 2, 5, 10, 20, 50, ... up to the count of
      weights, and the count itself.
    by_abs: rank weights by |w| (default by w: the most excitatory).

  Returns:
    One row per k: k, mean_cosine_top_k (mean over the k largest weights),
    mean_cosine_rank_k (mean over output neurons of the cosine at each
    one's k-th largest incoming weight; None for k > K_in), weight_k (the
    k-th largest weight).
  """
  w = np.asarray(weights, np.float64)
  c = np.asarray(label_cosine, np.float64)
  if w.shape != c.shape or w.ndim != 2:
    raise ValueError(f"weights {w.shape} and label_cosine {c.shape} must both "
                     "be (K_in, K_out)")
  key = np.abs(w) if by_abs else w
  flat = np.argsort(-key.ravel(), kind="stable")
  running = np.cumsum(c.ravel()[flat])
  per_output = np.argsort(-key, axis=0, kind="stable")  # (K_in, K_out)
  rank_cos = np.take_along_axis(c, per_output, 0).mean(axis=1)  # (K_in,)
  if ks is None:
    ks, step = [], 1
    while step <= w.size:
      ks += [k for k in (step, 2 * step, 5 * step) if k <= w.size]
      step *= 10
    ks.append(w.size)
  ks = sorted({int(k) for k in ks})
  if not ks or ks[0] < 1 or ks[-1] > w.size:
    raise ValueError(f"curve ks must be in 1..{w.size}; got {ks}")
  return [{"k": k, "mean_cosine_top_k": float(running[k - 1] / k),
           "mean_cosine_rank_k": (float(rank_cos[k - 1])
                                  if k <= w.shape[0] else None),
           "weight_k": float(w.ravel()[flat[k - 1]])} for k in ks]


def plot_top_k_curve(curve: Sequence[dict[str, Any]], baseline: float,
                     path: str, title: str = "") -> str:
  """Mean label cosine of the top-k weights against k (log axis); PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(5.5, 3.6))
  ks = [r["k"] for r in curve]
  ax.plot(ks, [r["mean_cosine_top_k"] for r in curve], marker="o",
          label="mean over the top-k weights")
  ranked = [(r["k"], r["mean_cosine_rank_k"]) for r in curve
            if r["mean_cosine_rank_k"] is not None]
  if ranked:
    ax.plot(*zip(*ranked), marker=".", linestyle="--",
            label="k-th strongest input of each output neuron")
  ax.axhline(baseline, color="gray", linewidth=1, label="all weights")
  ax.set_xscale("log")
  ax.set_xlabel("k (strongest weights)")
  ax.set_ylabel("concept cosine similarity")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_weight_correlation(weights: np.ndarray, label_cosine: np.ndarray,
                            summary: dict[str, Any], path: str,
                            title: str = "") -> str:
  """Scatter of weight vs label cosine (top-n highlighted); writes PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  w = np.asarray(weights).ravel()
  c = np.asarray(label_cosine).ravel()
  key = np.abs(w) if summary.get("top_by_abs") else w
  top = np.argsort(-key, kind="stable")[:summary["top_n"]]
  fig, ax = plt.subplots(figsize=(5.5, 4))
  if w.size > 20000:  # Keep the PNG small: a seeded subsample of the rest.
    rest = np.random.default_rng(0).choice(w.size, 20000, replace=False)
  else:
    rest = np.arange(w.size)
  ax.scatter(w[rest], c[rest], s=3, alpha=0.3, color="tab:gray",
             label=f"all (r={summary['r']:.3f}, p={summary['p_value']:.2g})")
  ax.scatter(w[top], c[top], s=6, alpha=0.8, color="tab:red",
             label=f"top {summary['top_n']} (r={summary['r_top']:.3f}, "
             f"p={summary['p_value_top']:.2g})")
  ax.set_xlabel("connection weight")
  ax.set_ylabel("label cosine similarity")
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def load_weights(path: str, key: str | None = None) -> np.ndarray:
  """Loads a kernel from .npy, or from .npz under `key`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"weights file {path!r} does not exist")
  try:
    data = np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise ValueError(f"weights file {path!r} is not a .npy or .npz array "
                     f"file ({e})") from e
  if isinstance(data, np.lib.npyio.NpzFile):
    if key is None or key not in data.files:
      raise ValueError(f"{path} is an .npz archive: name the array with key; "
                       f"arrays: {data.files}")
    return data[key]
  return data


def kernel_of(variables: Mapping[str, Any], layer: str) -> np.ndarray:
  """The kernel of the Dense or Conv module at dotted path `layer`.

  Args:
    variables: a linen model's variables ({"params": {...}}).
    layer: the module's dotted path, e.g. "fc" or "layer4.2.conv3".

  Returns:
    Its "kernel" parameter: (K_in, K_out) or (kh, kw, C_in, C_out).

  Raises:
    ValueError: no such module, or one without a kernel.
  """
  node: Any = variables.get("params", variables)
  for part in layer.split("."):
    if not isinstance(node, Mapping) or part not in node:
      raise ValueError(f"the target model has no parameters at {layer!r}; "
                       "layer_out must be a Dense or Conv layer (or give "
                       "the kernel as a file with weights=)")
    node = node[part]
  if not isinstance(node, Mapping) or "kernel" not in node:
    raise ValueError(f"layer {layer!r} of the target model has no 'kernel' "
                     "(it is not a Dense or Conv layer); give the kernel as "
                     "a file with weights=")
  return np.asarray(node["kernel"])
