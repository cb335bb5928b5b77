"""Which XLA:CPU kernels run the forward passes (a compile option per program).

jaxlib 0.10 hands convolutions, matrix products and reductions to YNNPACK
by default. For our models' forward passes XLA's own kernels are faster on
the CPU measured here (a 2-core AMD EPYC; the profile: docs/changelog.md,
"issue 30 ... YNNPACK and the forward passes"; the suites' records:
BENCHMARKS.md, resnet, clip, siglip): ResNet-50, batch 16, 1.18-1.29 s per batch with YNNPACK and
0.95-1.01 s without (PyTorch 1.16-1.26 s); a ViT-B/16 CLIP image tower,
batch 32, 8.3 s with and 5.96-6.16 s without (PyTorch 7.6 s), where
YNNPACK's reductions over LayerNorm and softmax rows cost the most. The
similarity kernels are the other way round: their reductions over a whole
(N, M) matrix (the softmax statistics, the finiteness check) are 7-10x
faster in YNNPACK. So the forward passes are compiled with YNNPACK off
(`forward_jit`) and everything else with XLA's default; a forward pass
whose outputs are then reduced (the pooled capture) is two programs, so
that the reduction runs in YNNPACK (`forward_then_reduce`).

This is an option of each compiled program (jax.jit's compiler_options),
not of the process: importing or using the library changes neither
$XLA_FLAGS nor JAX's configuration.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable

import jax

# The DebugOptions field naming the operations XLA:CPU gives to YNNPACK,
# and its value for the forward passes: none.
YNN_OPTION = "xla_cpu_experimental_ynn_fusion_type"
FORWARD_OPTIONS = {YNN_OPTION: ""}
# The first jaxlib known to have the option (an unknown one fails the
# compilation).
MIN_JAXLIB = (0, 10, 2)


def _version(text: str) -> tuple[int, ...]:
  """'0.10.2' -> (0, 10, 2): the leading dotted numbers."""
  leading = re.match(r"\d+(?:\.\d+)*", text)
  return tuple(int(p) for p in leading.group().split(".")) if leading else ()


def supported(jaxlib_version: str | None = None) -> bool:
  """Whether the installed jaxlib (or the one named) knows YNN_OPTION."""
  if jaxlib_version is None:
    import jaxlib  # pylint: disable=g-import-not-at-top
    jaxlib_version = jaxlib.__version__
  return _version(jaxlib_version) >= MIN_JAXLIB


def forward_options() -> dict[str, Any] | None:
  """compiler_options for a forward pass: FORWARD_OPTIONS when JAX's
  default backend is the CPU and jaxlib knows them, else None (XLA's
  defaults; a GPU or TPU compiler is left alone)."""
  if jax.default_backend() != "cpu" or not supported():
    return None
  return dict(FORWARD_OPTIONS)


def forward_jit(fn: Callable, **jit_kwargs) -> Callable:
  """jax.jit(fn) compiled with forward_options().

  The options are decided now (call it when the program is built, after
  jax.distributed.initialize if any). JAX takes compiler options only for
  a top-level program, so a call with traced arguments (inside the
  caller's own jit, vmap or grad) runs a plain jax.jit(fn), which inherits
  the options of the program it is part of.

  Returns:
    A callable like jax.jit's, with its `lower`.
  """
  options = forward_options()
  top = jax.jit(fn, compiler_options=options, **jit_kwargs)
  if options is None:
    return top
  nested = jax.jit(fn, **jit_kwargs)

  @functools.wraps(fn)
  def call(*args, **kwargs):
    traced = any(isinstance(leaf, jax.core.Tracer)
                 for leaf in jax.tree_util.tree_leaves((args, kwargs)))
    return (nested if traced else top)(*args, **kwargs)

  call.lower = top.lower
  return call


def forward_then_reduce(forward: Callable, reduce: Callable) -> Callable:
  """(args) -> reduce(forward(*args)), as two programs on the CPU.

  The forward pass is compiled with forward_options() (forward_jit); the
  reduction of its outputs (e.g. the mean of each captured map over H, W)
  is a second program with XLA's defaults, where YNNPACK runs the
  reductions. Fused into the forward program, XLA's own reduction loops
  took 0.064 s per batch of 32 for ResNet-50's five pooled layers (0.014
  s in YNNPACK) and pulled the residual additions into them: the whole
  capture took 1.98-2.02 s per batch against 1.67-1.78 s split (2-core
  AMD EPYC). Elsewhere (forward_options() is None) it is one program, and
  inside a caller's trace the two nested jits are inlined into it.

  Returns:
    A callable; its `forward` and `reduce` attributes are the two jitted
    programs (the same one, fused, when not split).
  """
  options = forward_options()
  if options is None:
    fused = jax.jit(lambda *args: reduce(forward(*args)))
    fused.forward = fused.reduce = fused
    return fused
  forward_fn = forward_jit(forward)
  reduce_fn = jax.jit(reduce)

  @functools.wraps(forward)
  def call(*args):
    return reduce_fn(forward_fn(*args))

  call.forward, call.reduce = forward_fn, reduce_fn
  return call
