"""Where Describe-and-Dissect keeps every stage's outputs, keyed by content.

Each stage asks the store for an entry under a key made from everything
that determines it (model identities, image fingerprints, prompts, config
values); a hit is reused, a miss is computed and saved at once, atomically.
So a killed run resumes from the last saved entry and a second run with the
same inputs is all hits. Two kinds of values are kept:

- arrays (crops' pixels are not stored: they are rebuilt from the probe
  images and their boxes; generated images, activations and CLIP
  embeddings are), and
- JSON values (boxes, captions, candidates, scores).

`Store` is the interface the stages use; `CacheStore` backs it with
`jax_dissect.store.cache.ArrayCache` (arrays as <root>/dnd_<stage>/<key>.npy,
JSON values as its JSON entries <root>/dnd_<stage>/<key>.entry.json, both
written atomically). Rooted at a describe_neurons cache directory, the
stages sit beside the run's own arrays (the `dnd` analysis does this). Any
object with the same five methods can replace it.
Hits and misses are counted per stage in `stats`.
"""

from __future__ import annotations

import collections
import os
from typing import Any, Protocol

import numpy as np

from jax_dissect.store import cache as cache_lib


class Store(Protocol):
  """Content-keyed storage of the stages' outputs.

  `key(stage, **parts)` makes a key from JSON-able parts (numpy arrays are
  fingerprinted); `get_*` return None on a miss.
  """

  stats: collections.Counter

  def key(self, stage: str, **parts: Any) -> str:
    ...

  def get_array(self, key: str) -> np.ndarray | None:
    ...

  def put_array(self, key: str, array: np.ndarray) -> None:
    ...

  def get_json(self, key: str) -> Any | None:
    ...

  def put_json(self, key: str, value: Any) -> None:
    ...


class CacheStore:
  """A `Store` in a directory, over `cache.ArrayCache`.

  Attributes:
    cache: the ArrayCache holding the arrays.
    stats: Counter of "<stage>:hit" and "<stage>:miss".
  """

  def __init__(self, root: str | os.PathLike):
    self.cache = cache_lib.ArrayCache(os.fspath(root))
    self.stats = collections.Counter()

  @property
  def root(self) -> str:
    return self.cache.root

  def key(self, stage: str, **parts: Any) -> str:
    return self.cache.key(f"dnd_{stage}", **parts)

  def _count(self, key: str, hit: bool) -> None:
    stage = key.split("/", 1)[0].removeprefix("dnd_")
    self.stats[f"{stage}:{'hit' if hit else 'miss'}"] += 1

  def get_array(self, key: str) -> np.ndarray | None:
    hit = self.cache.has(key)
    self._count(key, hit)
    return np.asarray(self.cache.load(key, mmap=False)) if hit else None

  def put_array(self, key: str, array: np.ndarray) -> None:
    self.cache.save(key, np.asarray(array))

  def get_json(self, key: str) -> Any | None:
    value = self.cache.load_json(key)
    self._count(key, value is not None)
    return value

  def put_json(self, key: str, value: Any) -> None:
    self.cache.save_json(key, value)

  def computed(self) -> dict[str, int]:
    """{stage: entries computed (misses)} so far."""
    return {k.rsplit(":", 1)[0]: v for k, v in sorted(self.stats.items())
            if k.endswith(":miss") and v}

  def misses(self) -> int:
    """Number of misses so far (0 after a run that was all cache hits)."""
    return sum(v for k, v in self.stats.items() if k.endswith(":miss"))
