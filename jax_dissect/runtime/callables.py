"""`package.module:function` specs: how users plug their own code in.

Targets (`--target_model=pkg.mod:make_spec`), text embedders
(`--text_embed_fn=...`), LLM categorizers (`--llm=...`), Describe-and-Dissect's
models (`--captioner=...`, `--generator=...`) and other pluggable stages all
name an object this way; `import_object` / `import_callable` are the one
place that resolves them. The part after the colon may be a dotted path
(`pkg.mod:Models.captioner`).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def is_spec(text: str) -> bool:
  """True if `text` looks like "package.module:function"."""
  module, sep, name = text.partition(":")
  return bool(sep and module and name and "/" not in module
              and "\\" not in module)


def import_object(spec: str, what: str = "object") -> Any:
  """Imports "package.module:attribute[.attribute...]" and returns it.

  Args:
    spec: the spec.
    what: what the object is for, for error messages (e.g. "captioner").

  Raises:
    ValueError: a malformed spec, a module that cannot be imported, or a
      missing attribute (one line naming the spec).
  """
  module, sep, name = str(spec).partition(":")
  if not sep or not module or not name:
    raise ValueError(f"{what} {spec!r} is not 'package.module:function'")
  try:
    obj = importlib.import_module(module)
  except ImportError as e:
    raise ValueError(f"{what} {spec!r}: cannot import module {module!r} "
                     f"({e})") from e
  for part in name.split("."):
    if not part or not hasattr(obj, part):
      raise ValueError(f"{what} {spec!r}: module {module!r} has no "
                       f"attribute {name!r}")
    obj = getattr(obj, part)
  return obj


def import_callable(spec: str, what: str = "callable") -> Callable[..., Any]:
  """Imports "package.module:function" and returns the callable.

  Args:
    spec: the spec.
    what: what the callable is for, for error messages (e.g. "target_model").

  Raises:
    ValueError: a malformed spec, a module that cannot be imported, or a
      missing or non-callable attribute (one line naming the spec).
  """
  fn = import_object(spec, what)
  if not callable(fn):
    module, _, name = str(spec).partition(":")
    raise ValueError(f"{what} {spec!r}: module {module!r} has no callable "
                     f"{name!r}")
  return fn
