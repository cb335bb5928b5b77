"""Token pooling of (B, T, C) layers by the names of a model's prefix tokens
(CLS, registers), and of its patch tokens alone."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_dissect.models import capture

REGISTERS = ("cls", "reg0", "reg1")


class Tokens(nn.Module):
  """(B, 32, 32, 3) -> (B, 3 + 16, C): CLS, two registers, 16 patches."""
  width: int = 6

  @nn.compact
  def __call__(self, x):
    b = x.shape[0]
    patches = x.reshape(b, 4, 8, 4, 8, 3).transpose(0, 1, 3, 2, 4, 5)
    patches = nn.Dense(self.width, name="embed")(patches.reshape(b, 16, -1))
    prefix = self.param("prefix", nn.initializers.normal(1.0),
                        (len(REGISTERS), self.width))
    tokens = jnp.concatenate(
        [jnp.broadcast_to(prefix, (b,) + prefix.shape), patches], axis=1)
    return nn.Dense(self.width, name="block")(tokens)


def test_names_become_positions():
  assert capture.canonical_token_pool("cls", REGISTERS) == "cls"
  assert capture.canonical_token_pool("reg1", REGISTERS) == "token:2"
  assert capture.canonical_token_pool("patch_mean", REGISTERS) == (
      "patch_mean:3")
  assert capture.canonical_token_pool("patch_max") == "patch_max:1"
  assert capture.canonical_token_pool("patch_max", ()) == "patch_max:0"
  for canonical in ("token:2", "patch_mean:3", "mean"):  # Idempotent.
    assert capture.canonical_token_pool(canonical) == canonical
  assert capture.canonical_token_pool("token:0") == "cls"
  with pytest.raises(ValueError, match=r"allowed: cls, mean, patch_mean, "
                     r"patch_max, reg0, reg1 \(the model's prefix tokens: "
                     r"cls, reg0, reg1\)"):
    capture.canonical_token_pool("reg7", REGISTERS)


def test_capture_by_prefix_and_patches():
  module = Tokens()
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  variables = module.init(jax.random.key(0), x)
  full = np.asarray(capture.capture_outputs(module, variables, x,
                                            ["block"])["block"])
  assert full.shape == (2, 19, 6)

  def pooled(name):
    return capture.capture_pooled(
        module, variables, x, ["block"],
        token_pool=capture.canonical_token_pool(name, REGISTERS))["block"]

  np.testing.assert_allclose(pooled("reg1"), full[:, 2], rtol=1e-6)
  np.testing.assert_allclose(pooled("cls"), full[:, 0], rtol=1e-6)
  np.testing.assert_allclose(pooled("patch_mean"), full[:, 3:].mean(1),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pooled("patch_max"), full[:, 3:].max(1),
                             rtol=1e-6)
  # A one-prefix default would count the registers as patches.
  wrong = capture.capture_pooled(module, variables, x, ["block"],
                                 token_pool="patch_mean")["block"]
  assert not np.allclose(wrong, full[:, 3:].mean(1), atol=1e-4)
  with pytest.raises(ValueError, match="has 19 tokens; token_pool=token:30"):
    capture.capture_pooled(module, variables, x, ["block"],
                           token_pool="token:30")
