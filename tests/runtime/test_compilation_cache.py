"""Compiled programs are written to the run's cache and read back by the
next process (JAX's persistent compilation cache, enabled by entry points)."""

import os
import subprocess
import sys

from tests import helpers

_PROGRAM = r"""
import sys, jax, jax.numpy as jnp
from jax_dissect.runtime import compilation_cache
print(compilation_cache.enable(sys.argv[1]))
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
print(float(f(jnp.ones((64, 64)))))
"""


def _run(cache_root):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.pop("XLA_FLAGS", None)
  return subprocess.run([sys.executable, "-c", _PROGRAM, str(cache_root)],
                        capture_output=True, text=True, check=True, env=env,
                        cwd=helpers.REPO, timeout=300).stdout.split()


def test_second_process_reuses_the_compiled_program(tmp_path):
  path, first = _run(tmp_path)
  assert path == str(tmp_path / "jax_compilation_cache")
  entries = sorted(os.listdir(path))
  assert entries, "nothing was written to the compilation cache"
  mtimes = {e: os.path.getmtime(os.path.join(path, e)) for e in entries}
  _, second = _run(tmp_path)
  assert second == first
  # Read, not rewritten: the same entries, untouched.
  assert sorted(os.listdir(path)) == entries
  assert {e: os.path.getmtime(os.path.join(path, e))
          for e in entries} == mtimes


def test_importing_the_library_leaves_the_cache_off():
  code = ("import jax, jax_dissect, jax_dissect.runtime.compilation_cache\n"
          "print(jax.config.jax_compilation_cache_dir)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, check=True, cwd=helpers.REPO,
                       timeout=300).stdout.strip()
  assert out == "None"

