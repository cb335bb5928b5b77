"""The XLA:CPU kernel choice the entry points put in $XLA_FLAGS: added
before JAX starts, a user's own value kept, and read by XLA (the compiled
convolution leaves YNNPACK)."""

import os
import subprocess
import sys

import pytest

from jax_dissect.runtime import xla_cpu
from tests import helpers

OPTION = xla_cpu.YNN_OPTION

# Compiles one convolution and prints whether XLA gave it to YNNPACK, and
# what apply() returned ("none" when it was not called).
_PROGRAM = r"""
import sys
from jax_dissect.runtime import xla_cpu
applied = xla_cpu.apply() if sys.argv[1] == "apply" else "none"
import jax, jax.numpy as jnp
x = jnp.ones((4, 32, 32, 64)); w = jnp.ones((3, 3, 64, 64))
conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
hlo = conv.lower(x, w).compile().as_text()
again = xla_cpu.apply()  # The backend has started: too late, no change.
import os
print(applied, "__ynn_fusion" in hlo, again, os.environ.get("XLA_FLAGS"))
"""


def _run(mode, xla_flags=None):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  out = subprocess.run([sys.executable, "-c", _PROGRAM, mode],
                       capture_output=True, text=True, check=True, env=env,
                       cwd=helpers.REPO, timeout=300).stdout.strip().split(maxsplit=3)
  return out


def test_options_are_added_once_and_a_users_value_wins():
  assert xla_cpu.with_tuned_options("") == f"{OPTION}="
  assert xla_cpu.with_tuned_options(
      " --xla_force_host_platform_device_count=8 ") == (
          f"--xla_force_host_platform_device_count=8 {OPTION}=")
  mine = f"--xla_cpu_use_onednn=false {OPTION}=reduce"
  assert xla_cpu.with_tuned_options(mine) == mine
  once = xla_cpu.with_tuned_options("")
  assert xla_cpu.with_tuned_options(once) == once


@pytest.mark.parametrize("version,ok", [
    ("0.10.2", True), ("0.11.0", True), ("0.10.2.dev20261201", True),
    ("1.0", True), ("0.10.1", False), ("0.9.9", False), ("0.4.38", False)])
def test_only_jaxlibs_that_know_the_option_get_it(version, ok):
  assert xla_cpu.supported(version) is ok


def test_apply_takes_convolutions_off_ynnpack_before_jax_starts():
  applied, on_ynn, again, flags = _run("apply")
  assert (applied, on_ynn, again) == ("True", "False", "False")
  assert flags == f"{OPTION}="
  # Without it, XLA's default hands the convolution to YNNPACK: the
  # option is what changes the kernel (not the test's program).
  applied, on_ynn, _, flags = _run("none")
  assert (applied, on_ynn, flags) == ("none", "True", "None")


def test_the_documented_way_back_to_xlas_default_is_kept():


  mine = (f"--xla_force_host_platform_device_count=2 "
          f"{OPTION}={xla_cpu.XLA_DEFAULT}")
  applied, on_ynn, _, flags = _run("apply", mine)
  assert (applied, on_ynn, flags) == ("True", "True", mine)
