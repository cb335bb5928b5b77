"""The sparse autoencoder (SAE): parameters, encoding, decoding, files.

A TopK SAE (Gao et al. 2024, "Scaling and evaluating sparse autoencoders")
over a layer's activations x (C channels), in a normalised space:

  x_n   = (x - mean) / scale                 (mean (C,), scale a scalar,
                                              stored with the model)
  pre   = (x_n - b_pre) @ w_enc + b_enc      (F pre-activations)
  codes = relu(pre) on the k largest entries of pre, 0 elsewhere
  x_hat = (codes @ w_dec + b_pre) * scale + mean

w_enc is (C, F), w_dec is (F, C) with unit-norm rows (feature f's direction
in the layer's space is w_dec[f]), b_enc (F,), b_pre (C,) the pre-encoder
bias. Codes are non-negative; a row has at most k non-zero codes (more only
when pre-activations tie at the k-th value).

Spatial maps: a conv map (B, H, W, C) or a token map (B, T, C) is encoded
position by position (token by token), as it was trained; an image's
feature activation is then the max (default) or the mean over its
positions, or (token maps) the first token's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from jax_dissect.store import files

PARAM_NAMES = ("w_enc", "b_enc", "w_dec", "b_pre")
POOLS = ("max", "mean", "cls")
FORMAT = "jax_dissect.features.SparseAutoencoder/1"
# Rows encoded per jitted call by `encode` (padded, so one compilation).
ENCODE_ROWS = 4096


# ----------------------------------------------------------------------------
# Pure functions of the parameters (used by training and encoding).
# ----------------------------------------------------------------------------


# kth_largest uses XLA's TopK up to this k and bisection beyond it.
# Measured on XLA:CPU (2-core AMD EPYC), (B, F) = (4096, 4096): TopK 0.026 s
# at k=4, 0.056 s at k=32, 0.26 s at k=256, where the bisection's 32
# counting passes take 0.23-0.29 s at any k; (4096, 16384): TopK 0.13 s at
# k=32 against 1.3 s, but 1.28 s at k=1024 against 1.0 s.
_MAX_TOPK_K = 128


def _kth_bisect(x: jax.Array, k: int) -> jax.Array:
  """(B, 1) k-th largest value of each row (ties counted), 32 passes.

  Float32 values map to uint32 keys in the same order; the largest key t
  with at least k row entries >= t is found bit by bit.
  """
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  signed = jnp.where(bits < 0, bits ^ jnp.int32(0x7fffffff), bits)
  keys = jax.lax.bitcast_convert_type(signed, jnp.uint32) ^ jnp.uint32(
      0x80000000)

  def body(i, t):
    cand = t | jnp.left_shift(jnp.uint32(1),
                              (31 - i).astype(jnp.uint32))
    count = jnp.sum(keys >= cand, axis=1, keepdims=True)
    return jnp.where(count >= k, cand, t)
  t = jax.lax.fori_loop(0, 32, body,
                        jnp.zeros((x.shape[0], 1), jnp.uint32))
  signed = jax.lax.bitcast_convert_type(t ^ jnp.uint32(0x80000000),
                                        jnp.int32)
  bits = jnp.where(signed < 0, signed ^ jnp.int32(0x7fffffff), signed)
  return jax.lax.bitcast_convert_type(bits, jnp.float32)


def _kth_top_k(x: jax.Array, k: int) -> jax.Array:
  """(B, 1) k-th largest value of each row (ties counted), by lax.top_k.

  The optimization barrier keeps XLA:CPU's fast TopK: a slice of top_k's
  output fused into it turns the TopK back into a full sort (measured
  2.2 s instead of 0.06 s for (4096, 4096), k=32).
  """
  values, _ = jax.lax.optimization_barrier(jax.lax.top_k(x, k))
  return values[:, k - 1:k]


def kth_largest(x: jax.Array, k: int) -> jax.Array:
  """(B, 1) the k-th largest value of each row of x (B, F) float32.

  Equal to jax.lax.top_k(x, k)[0][:, -1:] (ties counted): XLA's TopK for
  k <= _MAX_TOPK_K, bisection of the bit patterns beyond it.
  """
  x = jax.lax.stop_gradient(x)
  if k <= _MAX_TOPK_K:
    return _kth_top_k(x, k)
  return _kth_bisect(x, k)


def topk_relu(pre: jax.Array, k: int, mask: jax.Array | None = None
              ) -> jax.Array:
  """relu(pre) on each row's k largest entries (among `mask`), else 0.

  Entries tied with the k-th largest are kept too (more than k non-zero
  codes only on exact ties).

  Args:
    pre: (B, F) pre-activations.
    k: entries kept per row (1 <= k <= F).
    mask: optional (F,) bool; only these columns compete and may be
      non-zero (the dead latents of the auxiliary loss).

  Returns:
    (B, F) non-negative codes.
  """
  ranked = pre if mask is None else jnp.where(mask[None], pre, -jnp.inf)
  keep = ranked >= kth_largest(ranked, k)
  if mask is not None:
    keep = keep & mask[None]
  return jnp.where(keep, jax.nn.relu(pre), 0.0)


def pre_activations(params: Mapping[str, jax.Array], x_n: jax.Array
                    ) -> jax.Array:
  """(B, F) encoder pre-activations of normalised rows x_n (B, C).

  Computed as x_n @ w_enc + (b_enc - b_pre @ w_enc), equal to
  (x_n - b_pre) @ w_enc + b_enc: b_pre's gradient is then a (C, F) x (F,)
  product instead of a (B, F) x (F, C) matmul, one of the six a training
  step would otherwise do (~15% of a step on the CPU).
  """
  bias = params["b_enc"] - params["b_pre"] @ params["w_enc"]
  return x_n @ params["w_enc"] + bias


def decode_normalized(params: Mapping[str, jax.Array], codes: jax.Array
                      ) -> jax.Array:
  """(B, C) normalised reconstruction of codes (B, F)."""
  return codes @ params["w_dec"] + params["b_pre"]


def init_params(key: jax.Array, width: int, num_features: int
                ) -> dict[str, jax.Array]:
  """Random unit-norm decoder rows; the encoder starts as their transpose.

  Args:
    key: jax.random key.
    width: C, the layer's channels.
    num_features: F.

  Returns:
    {"w_enc": (C, F), "b_enc": (F,), "w_dec": (F, C), "b_pre": (C,)},
    float32.
  """
  w_dec = jax.random.normal(key, (num_features, width), jnp.float32)
  w_dec = w_dec / jnp.linalg.norm(w_dec, axis=1, keepdims=True)
  return {"w_enc": w_dec.T, "b_enc": jnp.zeros((num_features,), jnp.float32),
          "w_dec": w_dec, "b_pre": jnp.zeros((width,), jnp.float32)}


@functools.partial(jax.jit, static_argnames=("k", "pool", "shape"))
def _encode_block(params, mean, scale, x, *, k: int, pool: str | None,
                  shape: tuple[int, ...]):
  """Codes of a block of rows (b * positions, C), pooled per image."""
  codes = topk_relu(pre_activations(params, (x - mean) / scale), k)
  if len(shape) == 1:  # Rows: (b, F).
    return codes
  codes = codes.reshape(shape[:1] + (-1, codes.shape[-1]))
  if pool == "max":
    return codes.max(axis=1)
  if pool == "mean":
    return codes.mean(axis=1)
  if pool == "cls":
    return codes[:, 0]
  return codes.reshape(shape[:-1] + (codes.shape[-1],))


# ----------------------------------------------------------------------------
# The model.
# ----------------------------------------------------------------------------


def check_pool(pool: str | None, ndim: int) -> None:
  """One-line ValueError for a pool that is not allowed for `ndim` input."""
  if pool is not None and pool not in POOLS:
    raise ValueError(f"pool={pool!r}; allowed: {', '.join(POOLS)} or None "
                     "(per-position codes)")
  if pool == "cls" and ndim != 3:
    raise ValueError(f"pool='cls' takes the first token of a token map "
                     f"(B, T, C); got a {ndim}-D array")


def as_array(x: Any, name: str = "activations") -> np.ndarray:
  """x (array or .npy path, memory-mapped) as a numeric numpy array."""
  if isinstance(x, (str, os.PathLike)):
    path = os.fspath(x)
    if not os.path.isfile(path):
      raise ValueError(f"{name}={path!r}: no such file; expected a .npy "
                       "array")
    try:
      return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
      raise ValueError(f"{name}={path!r} is not a .npy array of numbers: "
                       f"{str(e).splitlines()[0][:150]}") from None
  if isinstance(x, jax.Array):
    x = np.asarray(x)
  if not isinstance(x, np.ndarray):
    x = np.asarray(x)
  if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or
                               x.dtype == np.bool_):
    raise ValueError(f"{name} must be a numeric array; got dtype {x.dtype}")
  return x


def _json_default(x: Any) -> Any:
  if isinstance(x, (np.integer, np.floating, np.bool_)):
    return x.item()
  if isinstance(x, np.ndarray):
    return x.tolist()
  return str(x)


@dataclasses.dataclass
class SparseAutoencoder:
  """A trained TopK sparse autoencoder of one layer (see the module doc).

  Attributes:
    params: {"w_enc": (C, F), "b_enc": (F,), "w_dec": (F, C) unit rows,
      "b_pre": (C,)} float32 numpy arrays.
    mean: (C,) float32, the input normalisation's mean.
    scale: the input normalisation's scale (a positive float).
    k: non-zero codes per row.
    config: the training options and facts (JSON-able).
    fit: its fit figures (see `train_sae`): fraction_of_variance_explained,
      mean_l0, dead_fraction and what they were measured on.
  """
  params: dict[str, np.ndarray]
  mean: np.ndarray
  scale: float
  k: int
  config: dict[str, Any] = dataclasses.field(default_factory=dict)
  fit: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def width(self) -> int:
    """C, the layer's channels."""
    return int(self.params["w_dec"].shape[1])

  @property
  def num_features(self) -> int:
    """F, the number of features."""
    return int(self.params["w_dec"].shape[0])

  @property
  def directions(self) -> np.ndarray:
    """(F, C) unit vectors: feature f's decoder direction in the layer's
    space (the normalisation's scale is a scalar, so it keeps directions)."""
    w = np.asarray(self.params["w_dec"], np.float32)
    return w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-30)

  def _check_width(self, x: np.ndarray, name: str) -> None:
    if x.ndim not in (2, 3, 4) or x.shape[-1] != self.width:
      raise ValueError(
          f"{name} has shape {tuple(x.shape)}; this SAE takes (N, C), "
          f"(B, T, C) or (B, H, W, C) with C={self.width} channels")

  def encode(self, activations: Any, pool: str | None = "max",
             batch_rows: int = ENCODE_ROWS) -> np.ndarray:
    """Feature codes of a layer's activations.

    Args:
      activations: (N, C) rows, (B, T, C) token maps or (B, H, W, C) conv
        maps (numpy, jax, or a .npy path, read in blocks).
      pool: for maps, how an image's code is taken from its positions'
        codes: "max" (default), "mean", "cls" (token maps: the first
        token), or None for the per-position codes (B, T, F) /
        (B, H, W, F). Ignored for (N, C) rows.
      batch_rows: rows (positions) encoded per jitted call.

    Returns:
      (N, F) (or (B, F) pooled, or per-position) non-negative float32 codes.
    """
    x = as_array(activations)
    self._check_width(x, "activations")
    check_pool(pool, x.ndim)
    params = {n: jnp.asarray(v) for n, v in self.params.items()}
    mean = jnp.asarray(self.mean)
    positions = int(np.prod(x.shape[1:-1])) if x.ndim > 2 else 1
    per_call = max(1, batch_rows // positions)
    n = x.shape[0]
    shape = (per_call,) + x.shape[1:] if x.ndim > 2 else (per_call,)
    out = []
    for lo in range(0, n, per_call):
      block = np.asarray(x[lo:lo + per_call], np.float32)
      size = block.shape[0]
      if size < per_call:  # Pad: one compiled shape for every block.
        block = np.concatenate([block, np.zeros(
            (per_call - size,) + block.shape[1:], np.float32)])
      rows = block.reshape(-1, self.width)
      codes = _encode_block(params, mean, jnp.float32(self.scale),
                            jnp.asarray(rows), k=self.k,
                            pool=pool if x.ndim > 2 else None, shape=shape)
      out.append(np.asarray(codes)[:size])
    if not out:
      return np.zeros((0, self.num_features), np.float32)
    return np.concatenate(out)

  def decode(self, codes: Any) -> np.ndarray:
    """Reconstruction (..., C) in the layer's space of codes (..., F)."""
    z = as_array(codes, "codes")
    if z.ndim < 1 or z.shape[-1] != self.num_features:
      raise ValueError(f"codes has shape {tuple(z.shape)}; the last axis "
                       f"must have F={self.num_features} features")
    x_n = decode_normalized(
        {n: jnp.asarray(v) for n, v in self.params.items()},
        jnp.asarray(z, jnp.float32).reshape(-1, self.num_features))
    x = np.asarray(x_n) * self.scale + self.mean
    return x.reshape(z.shape[:-1] + (self.width,)).astype(np.float32)

  def save(self, path: str | os.PathLike) -> str:
    """Writes the model to one .npz file atomically; returns the path.

    The file holds the four parameters, the normalisation (mean, scale),
    k, config and fit (JSON); no pickles.
    """
    meta = {"format": FORMAT, "k": int(self.k), "scale": float(self.scale),
            "config": self.config, "fit": self.fit}
    arrays = {n: np.asarray(self.params[n], np.float32) for n in PARAM_NAMES}
    arrays["mean"] = np.asarray(self.mean, np.float32)
    arrays["meta"] = np.array(json.dumps(meta, default=_json_default))

    def write(tmp: str) -> None:
      with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return files.write_with(path, write)

  @classmethod
  def load(cls, path: str | os.PathLike) -> SparseAutoencoder:
    """Reads a model written by `save`."""
    path = os.fspath(path)
    try:
      with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        if meta.get("format") != FORMAT:
          raise ValueError(f"{path!r} is not a saved SparseAutoencoder "
                           f"(format {meta.get('format')!r})")
        params = {n: np.array(data[n]) for n in PARAM_NAMES}
        mean = np.array(data["mean"])
    except (OSError, KeyError, EOFError, json.JSONDecodeError,
            zipfile.BadZipFile) as e:
      raise ValueError(f"cannot read a SparseAutoencoder from {path!r}: "
                       f"{type(e).__name__}") from None
    return cls(params=params, mean=mean, scale=meta["scale"], k=meta["k"],
               config=meta["config"], fit=meta["fit"])


def load_sae(path: str | os.PathLike) -> SparseAutoencoder:
  """Reads a SparseAutoencoder written by `SparseAutoencoder.save`."""
  return SparseAutoencoder.load(path)
