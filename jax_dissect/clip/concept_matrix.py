"""The concept-activation matrix P from image and text embeddings.

P[i, m] = <E_I(x_i) / |E_I(x_i)|, E_T(t_m) / |E_T(t_m)|>: the cosine
similarity of probe image i and concept m (no logit scale).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jax_dissect.store import files

_P_DTYPES = {"float32": np.float32, "float16": np.float16,
             "bfloat16": jnp.bfloat16}


def concept_activations(image_emb: np.ndarray, text_emb: np.ndarray,
                        dtype: Any = np.float32, chunk_rows: int = 4096
                        ) -> np.ndarray:
  """P = image_emb @ text_emb.T, computed in float32, stored as `dtype`.

  Args:
    image_emb: (N, D) unit-norm image embeddings.
    text_emb: (M, D) unit-norm text embeddings.
    dtype: storage dtype of P: float32 (default), float16 or bfloat16 (as a
      numpy dtype, jnp dtype or name). Products are always float32 and
      rounded once when stored.
    chunk_rows: image rows per matmul, bounding float32 temporaries.

  Returns:
    (N, M) array of cosine similarities, dtype `dtype`.
  """
  name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
  if name not in _P_DTYPES:
    raise ValueError(f"dtype={dtype!r} for P; allowed: {sorted(_P_DTYPES)}")
  image_emb = np.asarray(image_emb, np.float32)
  text_emb = np.asarray(text_emb, np.float32)
  if image_emb.ndim != 2 or text_emb.ndim != 2 or (
      image_emb.shape[1] != text_emb.shape[1]):
    raise ValueError(
        f"image_emb (N, D) and text_emb (M, D) must share D; got shapes "
        f"{image_emb.shape} and {text_emb.shape}")
  out = np.empty((image_emb.shape[0], text_emb.shape[0]), _P_DTYPES[name])
  for start in range(0, image_emb.shape[0], chunk_rows):
    stop = start + chunk_rows
    out[start:stop] = (image_emb[start:stop] @ text_emb.T).astype(out.dtype)
  return out


def write_concept_activations(path: str, image_emb: np.ndarray,
                              text_emb: np.ndarray, dtype: Any = np.float32,
                              chunk_rows: int = 4096) -> str:
  """Writes P = image_emb @ text_emb.T as a .npy file, block by block.

  P is written into a memory-mapped file (one copy, on disk, atomically),
  so N x M may exceed memory. Same arguments as `concept_activations`.

  Returns:
    The path.
  """
  n, m = image_emb.shape[0], text_emb.shape[0]
  with files.atomic_path(path) as tmp:
    first = concept_activations(image_emb[:1], text_emb, dtype=dtype)
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=first.dtype,
                                    shape=(n, m))
    for start in range(0, n, chunk_rows):
      out[start:start + chunk_rows] = concept_activations(
          image_emb[start:start + chunk_rows], text_emb, dtype=dtype)
    out.flush()
    del out
  return path
