"""Trained SAEs kept in the run's cache, keyed by their data and options.

An SAE is saved as `<cache>/sae/<key>.npz` (SparseAutoencoder.save, one
atomic file) as soon as it is trained, with `<key>.json` beside it saying
what it was trained on. The key is a fingerprint of the training data's
identity (the run's cached activations file: name, size and CRC-32; for
per-position training also the target and probe set) and of every option
that changes the result (F, k, lr, batch, epochs, seed, the shuffle
memory). So a killed analysis resumes with the layers it finished, a rerun
with the same options trains nothing, and changed data or options train a
new SAE. Training holds the entry's lock (store.cache): a second process
asking for the same SAE waits, then loads it.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from absl import logging

from jax_dissect.analyses.features import model
from jax_dissect.store import cache as cache_lib
from jax_dissect.store import files
from jax_dissect.store import integrity

KIND = "sae"
# Changes when the saved models' meaning changes (format or training).
FORMAT = 1


def file_id(path: str) -> dict[str, Any]:
  """Identity of a cached array file: its name, size and CRC-32."""
  return {"file": os.path.basename(path), "size": os.path.getsize(path),
          "crc32": integrity.file_checksum(path)}


def sae_key(cache: cache_lib.ArrayCache, **parts: Any) -> str:
  return cache.key(KIND, format=FORMAT, **parts)


def sae_path(cache: cache_lib.ArrayCache, key: str) -> str:
  return os.path.join(cache.root, key + ".npz")


def load_or_train(cache: cache_lib.ArrayCache, key: str,
                  train: Callable[[], model.SparseAutoencoder],
                  describe: dict[str, Any] | None = None
                  ) -> tuple[model.SparseAutoencoder, str, bool]:
  """The SAE of entry `key`: loaded if saved, else trained and saved.

  Args:
    cache: the run's cache.
    key: from `sae_key`.
    train: trains the SAE (called only on a miss).
    describe: what the SAE was trained on, saved beside it.

  Returns:
    (the SAE, its file, whether it was trained now).
  """
  path = sae_path(cache, key)
  with cache.locked(key):
    if os.path.exists(path):
      try:
        sae = model.load_sae(path)
        logging.info("cache hit: SAE %s", path)
        return sae, path, False
      except ValueError as e:
        logging.warning("cache: damaged SAE %s (%s); it is trained again",
                        path, e)
        os.remove(path)
    sae = train()
    sae.save(path)
    if describe is not None:
      files.write_json(os.path.join(cache.root, key + ".json"), describe)
    logging.info("features: saved SAE %s", path)
  return sae, path, True
