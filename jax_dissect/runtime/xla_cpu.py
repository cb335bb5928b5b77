"""XLA:CPU options the entry points set: which kernels run the forward passes.

jaxlib 0.10 hands convolutions, matmuls and reductions to YNNPACK by
default (what `--xla_cpu_experimental_ynn_fusion_type=XLA_DEFAULT` asks
for; the option's own default list is empty, and once the option is given
only the operations it names go to YNNPACK). On the 2-core AMD EPYC
the project measures on, XLA's own kernels are faster for our models
(docs/performance.md has the table):
ResNet-50 batch 16 1.18-1.29 s with YNNPACK, 0.95-1.01 s without (PyTorch
1.16-1.26 s); a ViT-B/16 CLIP image tower batch 32 8.3 s with, 5.96-6.16 s
without (PyTorch 7.6 s); YNNPACK's reductions (LayerNorm, softmax) cost the
most there. So the entry points turn YNNPACK off with an empty list.

The option is read once, when JAX starts its CPU backend, so it goes into
$XLA_FLAGS before the first JAX computation. This changes the process
environment: only entry points call `apply` (jax_dissect.commands,
scripts/benchmark.py); importing the library never does. A value the user
put in $XLA_FLAGS for the same option is kept; XLA's behaviour without
the option comes back with
`XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=individual_convolution,individual_dot,reduce`.
"""

from __future__ import annotations

from collections.abc import MutableMapping
import os

# The option naming the operations XLA:CPU hands to YNNPACK.
YNN_OPTION = "--xla_cpu_experimental_ynn_fusion_type"
# Its value here: none (XLA's own kernels for everything).
YNN_VALUE = ""
# The value that gives what jaxlib 0.10.2 does without the option (the
# operations its compiled programs hand to YNNPACK then).
XLA_DEFAULT = "individual_convolution,individual_dot,reduce"
# The first jaxlib known to have the option (older ones abort on an
# unknown XLA flag).
MIN_JAXLIB = (0, 10, 2)


def _version(text: str) -> tuple[int, ...]:
  """'0.10.2' -> (0, 10, 2); parts after the numbers are ignored."""
  parts = []
  for part in text.split("."):
    digits = ""
    for ch in part:
      if not ch.isdigit():
        break
      digits += ch
    if not digits:
      break
    parts.append(int(digits))
  return tuple(parts)


def supported(jaxlib_version: str | None = None) -> bool:
  """Whether the installed jaxlib (or the one named) knows YNN_OPTION."""
  if jaxlib_version is None:
    import jaxlib  # pylint: disable=g-import-not-at-top
    jaxlib_version = jaxlib.__version__
  return _version(jaxlib_version) >= MIN_JAXLIB


def with_tuned_options(xla_flags: str) -> str:
  """$XLA_FLAGS with the entry points' XLA:CPU options added.

  Args:
    xla_flags: the current value ('' when unset).

  Returns:
    The value to use: unchanged when it already sets YNN_OPTION.
  """
  if any(f.split("=", 1)[0] == YNN_OPTION for f in xla_flags.split()):
    return xla_flags
  return " ".join(f for f in (xla_flags.strip(), f"{YNN_OPTION}={YNN_VALUE}")
                  if f)


def apply(environ: MutableMapping[str, str] | None = None) -> bool:
  """Puts the XLA:CPU options into $XLA_FLAGS (entry points only).

  Must run before JAX starts its backends; after that XLA would not read
  them, so nothing is changed.

  Args:
    environ: the environment to change (os.environ by default).

  Returns:
    Whether the options are in effect for this process's CPU backend:
    set here or by the user, and read by a backend not yet started.
  """
  environ = os.environ if environ is None else environ
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  if xla_bridge.backends_are_initialized() or not supported():
    return False
  environ["XLA_FLAGS"] = with_tuned_options(environ.get("XLA_FLAGS", ""))
  return True
