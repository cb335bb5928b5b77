"""Records the outputs of the submodules of a Flax nnx module, by path.

nnx modules are Python objects with no `capture_intermediates`; their layers
are found with `nnx.iter_modules` and named by their attribute path, ints
included ("blocks.0.conv"). While `recording_calls` is active, the
`__call__` of every class of those submodules is wrapped so that a call on
one of them stores its output under its path; the classes are restored on
exit. Use it inside a traced function (jit, eval_shape) on a model rebuilt
there with `nnx.merge`, so the stored values are tracers of that trace.

Limits: only `__call__` is recorded (not other methods), and other instances
of the same classes called at the same time, in another thread, run through
the wrapper too (they are not recorded: only the model's own submodules
are).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Container, Iterator, Mapping

from flax import nnx

_MISSING = object()


def module_paths(model: nnx.Module) -> dict[int, str]:
  """{id(submodule): dotted path} of every submodule, root excluded."""
  return {id(m): ".".join(str(p) for p in path)
          for path, m in nnx.iter_modules(model) if path}


def _defines_call(cls: type) -> bool:
  return any("__call__" in c.__dict__ for c in cls.__mro__ if c is not object)


def _recording(original: Callable[..., Any], paths: Mapping[int, str],
               wanted: Container[str] | None,
               found: dict[str, Any]) -> Callable[..., Any]:
  """`original` (an unbound __call__) that also stores wanted outputs."""

  def call(self, *args, **kwargs):
    out = original(self, *args, **kwargs)
    path = paths.get(id(self))
    if path is not None and (wanted is None or path in wanted):
      found[path] = out  # The last call's; keeps the first call's place.
    return out

  call.__wrapped__ = original
  return call


@contextlib.contextmanager
def recording_calls(model: nnx.Module,
                    wanted: Container[str] | None = None
                    ) -> Iterator[dict[str, Any]]:
  """Within the block, submodule calls of `model` store their outputs.

  Args:
    model: the nnx module whose submodules are recorded.
    wanted: dotted paths to record; None records all.

  Yields:
    {dotted path: output of the last `__call__`}, filled as the model runs,
    in the order of the first outputs (a block's children before the
    block).
  """
  paths = module_paths(model)
  found: dict[str, Any] = {}
  classes = []
  for _, m in nnx.iter_modules(model):
    if type(m) not in classes and _defines_call(type(m)):
      classes.append(type(m))
  patched = []
  try:
    for cls in classes:
      own = cls.__dict__.get("__call__", _MISSING)
      patched.append((cls, own))
      cls.__call__ = _recording(cls.__call__, paths, wanted, found)
    yield found
  finally:
    for cls, own in reversed(patched):
      if own is _MISSING:
        delattr(cls, "__call__")
      else:
        cls.__call__ = own
