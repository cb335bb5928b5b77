"""Checks of user options, each raising one ValueError line that names the
option, the bad value and what is allowed. Shared by describe_neurons and
the analyses so that every entry point words its errors the same way."""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any


def choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
  """`value` if it is one of `allowed`."""
  if value not in allowed:
    raise ValueError(f"{name}={value!r} is not valid; allowed: "
                     f"{', '.join(map(str, allowed))}")
  return value


def integer(name: str, value: Any, minimum: int | None = None,
            maximum: int | None = None) -> int:
  """`value` as an int within [minimum, maximum] (strings are parsed)."""
  if isinstance(value, bool):
    raise ValueError(f"{name}={value!r} is not an integer")
  try:
    out = int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r} is not an integer") from None
  if isinstance(value, float) and value != out:
    raise ValueError(f"{name}={value!r} is not an integer")
  if minimum is not None and out < minimum:
    raise ValueError(f"{name}={out} must be >= {minimum}")
  if maximum is not None and out > maximum:
    raise ValueError(f"{name}={out} must be <= {maximum}")
  return out


def real(name: str, value: Any, low: float | None = None,
         high: float | None = None, *, low_open: bool = False,
         high_open: bool = False) -> float:
  """`value` as a finite float within the given bounds."""
  if isinstance(value, bool):
    raise ValueError(f"{name}={value!r} is not a number")
  try:
    out = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r} is not a number") from None
  if not math.isfinite(out):
    raise ValueError(f"{name}={value!r} must be a finite number")
  if low is not None and (out <= low if low_open else out < low):
    raise ValueError(f"{name}={out} must be {'>' if low_open else '>='} "
                     f"{low}")
  if high is not None and (out >= high if high_open else out > high):
    raise ValueError(f"{name}={out} must be {'<' if high_open else '<='} "
                     f"{high}")
  return out


def integers(name: str, values: Any, minimum: int | None = None,
             maximum: int | None = None) -> list[int]:
  """A list of ints from a list or a comma-separated string."""
  if isinstance(values, str):
    values = [v for v in values.split(",") if v.strip()]
  return [integer(name, v.strip() if isinstance(v, str) else v, minimum,
                  maximum) for v in values]


def names_list(name: str, values: Any) -> list[str]:
  """A list of non-empty names from a list or a comma-separated string."""
  if values is None:
    return []
  if isinstance(values, str):
    values = values.split(",")
  out = [str(v).strip() for v in values]
  if any(not v for v in out):
    raise ValueError(f"{name}={','.join(out)!r} has an empty name")
  return out
