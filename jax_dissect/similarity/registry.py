"""The registry of similarity functions: name -> planner, defaults, facts.

A kernel is registered with the planner that builds its KernelPlan
(jax_dissect.similarity.kernels); the planner's keyword-only arguments and
their defaults are the kernel's hyper-parameters, so the registry is the one
place that knows which kernels exist and what they take.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping

import numpy as np

from jax_dissect.similarity import kernels
from jax_dissect.similarity.kernels import KernelPlan


@dataclasses.dataclass(frozen=True)
class Kernel:
  """A registered similarity function.

  Attributes:
    name: its registry name.
    planner: (N, K, M, chunk_size, **hyper) -> KernelPlan; validates the
      hyper-parameters. Its keyword defaults are the kernel's defaults.
    defaults: hyper-parameter name -> default (from the planner's signature).
    uses_top_k: the scores depend only on each neuron's top_k images.
    uses_key: the kernel takes a jax.random key (`key`).
  """
  name: str
  planner: Callable[..., KernelPlan]
  defaults: Mapping[str, Any]
  uses_top_k: bool
  uses_key: bool


KERNELS: dict[str, Kernel] = {}


def register_kernel(name: str, planner: Callable[..., KernelPlan]) -> Kernel:
  """Registers a similarity function under `name`; returns its Kernel.

  The planner is called as planner(N, K, M, chunk_size, **hyper) and returns
  a KernelPlan (see the module docstring); its keyword-only arguments and
  their defaults are the kernel's hyper-parameters. A `key` argument marks a
  kernel that needs a jax.random key; a `top_k` argument one that uses each
  neuron's top_k images.
  """
  params = inspect.signature(planner).parameters
  defaults = {p.name: p.default for p in params.values()
              if p.kind == inspect.Parameter.KEYWORD_ONLY and p.name != "key"}
  kernel = Kernel(name=name, planner=planner, defaults=defaults,
                  uses_top_k="top_k" in params, uses_key="key" in params)
  KERNELS[name] = kernel
  return kernel


def names() -> list[str]:
  """The registered similarity functions' names."""
  return list(KERNELS)


def get_kernel(name: str) -> Kernel:
  """The Kernel registered as `name`, or a ValueError listing the names."""
  if name not in KERNELS:
    raise ValueError(f"unknown similarity function {name!r}; allowed: "
                     f"{', '.join(KERNELS)}")
  return KERNELS[name]


register_kernel("soft_wpmi", kernels.plan_soft_wpmi)
register_kernel("wpmi", kernels.plan_wpmi)
register_kernel("cos_similarity", kernels.plan_cos)
register_kernel("cos_similarity_cubed", kernels.plan_cos_cubed)
register_kernel("rank_reorder", kernels.plan_rank_reorder)


def plan_kernel(name: str, num_images: int, num_neurons: int,
                num_concepts: int, *, chunk_size: int | None = None,
                **hyper) -> KernelPlan:
  """Builds the KernelPlan of similarity function `name` (validates hyper).

  Raises:
    ValueError: unknown name, unknown or bad hyper-parameters.
  """
  kernel = get_kernel(name)
  unknown = sorted(set(hyper) - set(kernel.defaults) - {"key"})
  if unknown:
    raise ValueError(f"{name} has no hyper-parameter(s) {unknown}; allowed: "
                     f"{', '.join(kernel.defaults) or 'none'}")
  for key, value in hyper.items():  # NaN/inf make every score NaN.
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
      raise ValueError(f"{name}: {key}={value!r} must be a finite number")
  return kernel.planner(num_images, num_neurons, num_concepts, chunk_size,
                        **hyper)
