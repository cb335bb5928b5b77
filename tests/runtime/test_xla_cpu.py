"""Forward passes are compiled with YNNPACK off (a compile option of each
program), everything else with XLA's defaults; nothing global changes."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_dissect.models import capture
from jax_dissect.models import resnet
from jax_dissect.runtime import xla_cpu


def _conv(x, w):
  return jax.lax.conv_general_dilated(
      x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _on_ynnpack(jitted, *args) -> bool:
  return "__ynn_fusion" in jitted.lower(*args).compile().as_text()


def test_forward_programs_leave_ynnpack_and_others_keep_xlas_default():
  # A convolution big enough for XLA's default to give it to YNNPACK.
  x, w = jnp.ones((4, 32, 32, 64)), jnp.ones((3, 3, 64, 64))
  assert _on_ynnpack(jax.jit(_conv), x, w)
  assert not _on_ynnpack(xla_cpu.forward_jit(_conv), x, w)
  np.testing.assert_allclose(xla_cpu.forward_jit(_conv)(x, w),
                             jax.jit(_conv)(x, w), rtol=1e-6)
  assert "XLA_FLAGS" not in os.environ or xla_cpu.YNN_OPTION not in (
      os.environ["XLA_FLAGS"])


def test_the_capture_program_of_a_resnet_has_no_ynnpack_fusion():
  module = resnet.ResNet18()
  variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  images = jnp.ones((2, 64, 64, 3))
  got = capture.capture_pooled(module, variables, images, ("layer1",))
  assert got["layer1"].shape == (2, 64)
  # The program capture_pooled just ran (from its cache).
  static, split = capture._split(module, variables)  # pylint: disable=protected-access
  fn = capture._capture_for(static, ("layer1",), "avg", "cls", None, {})  # pylint: disable=protected-access
  assert not _on_ynnpack(fn.forward, split, images)
  # ... where XLA's default would give its convolutions to YNNPACK.
  assert _on_ynnpack(jax.jit(fn.__wrapped__), split, images)
  # The pooling over H, W is a second program, with YNNPACK's reductions.
  maps = fn.forward(split, images)
  assert maps["layer1"].shape == (2, 16, 16, 64)
  assert _on_ynnpack(fn.reduce, maps)
  np.testing.assert_allclose(fn.reduce(maps)["layer1"], got["layer1"])


def test_forward_then_reduce_is_one_program_off_the_cpu(monkeypatch):
  monkeypatch.setattr(xla_cpu, "forward_options", lambda: None)
  fn = xla_cpu.forward_then_reduce(_conv, lambda y: jnp.mean(y, (1, 2)))
  assert fn.forward is fn.reduce is fn
  x, w = jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 4))
  np.testing.assert_allclose(fn(x, w), jnp.mean(_conv(x, w), (1, 2)))


def test_a_forward_pass_runs_inside_the_callers_own_jit():
  """JAX refuses compiler options on a nested jit: inside a trace the
  plain program runs, under the outer program's options."""
  module = resnet.ResNet18()
  variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  images = jnp.ones((2, 64, 64, 3))
  outer = jax.jit(capture.capture_pooled, static_argnums=(0, 3))
  got = outer(module, variables, images, ("layer1",))
  want = capture.capture_pooled(module, variables, images, ("layer1",))
  np.testing.assert_allclose(got["layer1"], want["layer1"], rtol=1e-5,
                             atol=1e-6)
  conv = xla_cpu.forward_jit(_conv)
  x, w = jnp.ones((4, 32, 32, 64)), jnp.ones((3, 3, 64, 64))
  assert _on_ynnpack(jax.jit(lambda x, w: conv(x, w) + 1), x, w)
  grads = jax.grad(lambda w: conv(x, w).sum())(w)
  assert grads.shape == w.shape


@pytest.mark.parametrize("version,ok", [
    ("0.10.2", True), ("0.11.0", True), ("0.10.2.dev20261201", True),
    ("1.0", True), ("0.10.1", False), ("0.9.9", False), ("0.4.38", False)])
def test_only_jaxlibs_that_know_the_option_get_it(version, ok):
  assert xla_cpu.supported(version) is ok


def test_other_backends_and_old_jaxlibs_get_xlas_defaults(monkeypatch):
  assert xla_cpu.forward_options() == {xla_cpu.YNN_OPTION: ""}
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert xla_cpu.forward_options() is None
  monkeypatch.undo()
  monkeypatch.setattr(xla_cpu, "supported", lambda: False)
  assert xla_cpu.forward_options() is None
