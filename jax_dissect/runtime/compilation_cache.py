"""Compiled XLA programs kept on disk between runs (JAX's persistent cache).

The first pass of a run compiles every forward pass and kernel (about a
minute for ResNet-50 and ViT-B/16 CLIP on a CPU); with the cache, a second
run with the same shapes loads them instead. This changes JAX's global
configuration, so only entry points call `enable` (jax_dissect.commands,
on by default, `--nocompilation_cache` turns it off); importing the library
never does.
"""

from __future__ import annotations

import os

import jax

# The cache's folder under a run's cache directory (activation_dir).
SUBDIR = "jax_compilation_cache"
# Programs that compile faster than this are not worth a file; JAX's own
# environment variable for it, when set, wins (JAX reads it on import).
MIN_COMPILE_SECONDS = 0.5
MIN_COMPILE_ENV = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"


def enable(cache_root: str | os.PathLike) -> str:
  """Keeps compiled programs in `cache_root`/jax_compilation_cache.

  Programs that compiled in under MIN_COMPILE_SECONDS are not kept
  (JAX reads its own $JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS instead,
  when set).

  Args:
    cache_root: a run's cache directory (created if missing).

  Returns:
    The compilation cache directory.

  Raises:
    OSError: the directory cannot be created.
  """
  path = os.path.join(os.fspath(cache_root), SUBDIR)
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  if MIN_COMPILE_ENV not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      MIN_COMPILE_SECONDS)
  return path
