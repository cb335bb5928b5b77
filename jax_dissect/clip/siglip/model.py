"""SigLIP's image and text towers in Flax linen, and their embeddings.

The architecture is SigLIP's (Zhai et al., 2023) as transformers'
SiglipModel implements it (written here from that description):

- Both towers are pre-norm transformer encoders: x += Attn(LN1(x));
  x += MLP(LN2(x)), MLP = fc2(act(fc1(x))), attention without mask and
  with separate q/k/v/out projections (scale head_dim^-1/2).
- Image tower: a strided patch convolution (no class token), learned
  position embeddings, the encoder, a post layer norm, then a multihead
  attention-pooling head: one learned probe attends over the patch tokens
  (q from the probe, k/v from the tokens), then h = a + MLP(LN(a)) with the
  attention output a; the embedding is h (B, D). No projection.
- Text tower: token + position embeddings, the encoder, a final layer
  norm; the embedding is the LAST position's state (texts are padded to
  the maximum length, so it is a padding or end token) through a linear
  head.

Parameter tree (`params`): {"vision": ..., "text": ..., "logit_scale": (1,),
"logit_bias": (1,)}; `image_embeds` reads only params["vision"] and
`text_embeds` only params["text"], so one tower's parameters suffice.
Parameters are float32; with compute_dtype "bfloat16" (or "float16") the
matmuls run in that dtype (each layer casts its parameters), softmax and
layer-norm statistics stay float32, and embeddings come back float32.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jax_dissect.clip.siglip import config as config_lib

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype_of(name: str) -> Any:
  """The jnp dtype of a compute dtype name (one-line ValueError if bad)."""
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype={name!r} is not valid; allowed: "
                     f"{', '.join(COMPUTE_DTYPES)}")
  return jnp.dtype(name)


def _quick_gelu(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(1.702 * x)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    # transformers' gelu_pytorch_tanh, gelu_new and gelu_fast are all the
    # tanh approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_fast": functools.partial(jax.nn.gelu, approximate=True),
    "quick_gelu": _quick_gelu,
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


class Mlp(nn.Module):
  """fc2(act(fc1(x))): (B, T, D) -> (B, T, D)."""
  config: config_lib.TowerConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    x = nn.Dense(cfg.intermediate_size, dtype=self.dtype, name="fc1")(x)
    x = _ACTIVATIONS[cfg.hidden_act](x)
    return nn.Dense(cfg.hidden_size, dtype=self.dtype, name="fc2")(x)


class Attention(nn.Module):
  """Multihead attention of queries over keys/values, no mask.

  (B, Tq, D), (B, Tk, D) -> (B, Tq, D); softmax in float32.
  """
  config: config_lib.TowerConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, queries: jax.Array, context: jax.Array) -> jax.Array:
    cfg = self.config
    heads = cfg.num_attention_heads
    head_dim = cfg.hidden_size // heads

    def project(name, x):
      y = nn.Dense(cfg.hidden_size, dtype=self.dtype, name=name)(x)
      return y.reshape(*y.shape[:2], heads, head_dim)

    q = project("q_proj", queries)
    k = project("k_proj", context)
    v = project("v_proj", context)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                        preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits * head_dim ** -0.5, axis=-1)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    out = out.reshape(*out.shape[:2], cfg.hidden_size)
    return nn.Dense(cfg.hidden_size, dtype=self.dtype, name="out_proj")(out)


def _layer_norm(cfg: config_lib.TowerConfig, dtype: Any, name: str
                ) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=dtype, name=name)


class EncoderLayer(nn.Module):
  """Pre-norm block: x + Attn(LN1(x)), then + MLP(LN2(.)); (B, T, D)."""
  config: config_lib.TowerConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    h = _layer_norm(cfg, self.dtype, "layer_norm1")(x)
    x = x + Attention(cfg, self.dtype, name="self_attn")(h, h)
    h = _layer_norm(cfg, self.dtype, "layer_norm2")(x)
    return x + Mlp(cfg, self.dtype, name="mlp")(h)


class Encoder(nn.Module):
  """num_hidden_layers EncoderLayers ("layers_0", ...); (B, T, D)."""
  config: config_lib.TowerConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.config.num_hidden_layers):
      x = EncoderLayer(self.config, self.dtype, name=f"layers_{i}")(x)
    return x


class AttentionPoolingHead(nn.Module):
  """SigLIP's multihead attention pooling: (B, T, D) -> (B, D)."""
  config: config_lib.TowerConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg = self.config
    probe = self.param("probe", nn.initializers.xavier_uniform(),
                       (1, 1, cfg.hidden_size), jnp.float32)
    probe = jnp.broadcast_to(probe.astype(self.dtype),
                             (x.shape[0], 1, cfg.hidden_size))
    a = Attention(cfg, self.dtype, name="attention")(probe, x)
    h = _layer_norm(cfg, self.dtype, "layernorm")(a)
    return (a + Mlp(cfg, self.dtype, name="mlp")(h))[:, 0]


class VisionTower(nn.Module):
  """Image tower: pixels (B, S, S, C) NHWC -> embedding (B, D).

  S must be config.image_size (no position-embedding interpolation).
  """
  config: config_lib.VisionConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, pixels: jax.Array) -> jax.Array:
    cfg = self.config
    want = (cfg.image_size, cfg.image_size, cfg.num_channels)
    if pixels.ndim != 4 or tuple(pixels.shape[1:]) != want:
      raise ValueError(
          f"SigLIP pixels must be (B, {want[0]}, {want[1]}, {want[2]}) NHWC; "
          f"got shape {tuple(pixels.shape)}")
    p = cfg.patch_size
    x = nn.Conv(cfg.hidden_size, (p, p), strides=(p, p), padding="VALID",
                dtype=self.dtype, name="patch_embedding")(
                    pixels.astype(self.dtype))
    x = x.reshape(x.shape[0], cfg.num_patches, cfg.hidden_size)
    pos = self.param("position_embedding", nn.initializers.normal(0.02),
                     (cfg.num_patches, cfg.hidden_size), jnp.float32)
    x = x + pos.astype(self.dtype)
    x = Encoder(cfg, self.dtype, name="encoder")(x)
    x = _layer_norm(cfg, self.dtype, "post_layernorm")(x)
    return AttentionPoolingHead(cfg, self.dtype, name="head")(x)


class TextTower(nn.Module):
  """Text tower: token ids (B, L) -> embedding (B, projection_size).

  L <= config.max_position_embeddings; the last position is pooled.
  """
  config: config_lib.TextConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array) -> jax.Array:
    cfg = self.config
    if input_ids.ndim != 2 or not (
        0 < input_ids.shape[1] <= cfg.max_position_embeddings):
      raise ValueError(
          f"SigLIP input_ids must be (B, L) with 0 < L <= "
          f"{cfg.max_position_embeddings}; got shape {tuple(input_ids.shape)}")
    length = input_ids.shape[1]
    x = nn.Embed(cfg.vocab_size, cfg.hidden_size, dtype=self.dtype,
                 name="token_embedding")(input_ids)
    pos = self.param("position_embedding", nn.initializers.normal(0.02),
                     (cfg.max_position_embeddings, cfg.hidden_size),
                     jnp.float32)
    x = x + pos[:length].astype(self.dtype)
    x = Encoder(cfg, self.dtype, name="encoder")(x)
    x = _layer_norm(cfg, self.dtype, "final_layer_norm")(x)
    return nn.Dense(cfg.projection_size, dtype=self.dtype, name="head")(
        x[:, -1])


class Siglip(nn.Module):
  """Both towers, plus SigLIP's logit scale and bias (unused by P)."""
  config: config_lib.SiglipConfig
  dtype: Any = jnp.float32

  def setup(self):
    self.vision = VisionTower(self.config.vision, self.dtype)
    self.text = TextTower(self.config.text, self.dtype)
    self.logit_scale = self.param("logit_scale", nn.initializers.zeros,
                                  (1,), jnp.float32)
    self.logit_bias = self.param("logit_bias", nn.initializers.zeros,
                                 (1,), jnp.float32)

  def __call__(self, pixels: jax.Array, input_ids: jax.Array
               ) -> tuple[jax.Array, jax.Array]:
    return self.vision(pixels), self.text(input_ids)

  def logits(self, image_emb: jax.Array, text_emb: jax.Array) -> jax.Array:
    """SigLIP's sigmoid logits (N, M): cos * exp(logit_scale) + bias."""
    return (cosine(image_emb, text_emb) * jnp.exp(self.logit_scale) +
            self.logit_bias)


def _example_inputs(config: config_lib.SiglipConfig
                    ) -> tuple[jax.Array, jax.Array]:
  v = config.vision
  pixels = jnp.zeros((1, v.image_size, v.image_size, v.num_channels),
                     jnp.float32)
  ids = jnp.zeros((1, config.text.max_position_embeddings), jnp.int32)
  return pixels, ids


def init_params(config: config_lib.SiglipConfig, seed: int = 0) -> Any:
  """Random float32 parameters of a SigLIP (Flax initialisers)."""
  pixels, ids = _example_inputs(config)
  return jax.jit(Siglip(config).init)(jax.random.key(seed), pixels,
                                      ids)["params"]


def param_shapes(config: config_lib.SiglipConfig) -> Any:
  """The parameter tree's jax.ShapeDtypeStructs (no computation)."""
  pixels, ids = _example_inputs(config)
  return jax.eval_shape(Siglip(config).init, jax.random.key(0), pixels,
                        ids)["params"]


def num_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


@functools.partial(jax.jit, static_argnames=("config", "compute_dtype"))
def image_embeds(params: Any, pixels: jax.Array, *,
                 config: config_lib.SiglipConfig,
                 compute_dtype: str = "float32") -> jax.Array:
  """Image embeddings, not normalised.

  Args:
    params: the parameter tree (only params["vision"] is read).
    pixels: (B, S, S, 3) float32 preprocessed images, NHWC, S =
      config.vision.image_size.
    config: the model's settings (static).
    compute_dtype: "float32", "bfloat16" or "float16" (static).

  Returns:
    (B, D) float32.
  """
  tower = VisionTower(config.vision, compute_dtype_of(compute_dtype))
  return tower.apply({"params": params["vision"]}, pixels).astype(
      jnp.float32)


@functools.partial(jax.jit, static_argnames=("config", "compute_dtype"))
def text_embeds(params: Any, input_ids: jax.Array, *,
                config: config_lib.SiglipConfig,
                compute_dtype: str = "float32") -> jax.Array:
  """Text embeddings, not normalised.

  Args:
    params: the parameter tree (only params["text"] is read).
    input_ids: (B, L) integer token ids, padded to L =
      config.text.max_position_embeddings as SigLIP was trained (the last
      position is pooled).
    config: the model's settings (static).
    compute_dtype: "float32", "bfloat16" or "float16" (static).

  Returns:
    (B, D) float32.
  """
  tower = TextTower(config.text, compute_dtype_of(compute_dtype))
  return tower.apply({"params": params["text"]}, input_ids).astype(
      jnp.float32)


def l2_normalize(x: jax.Array) -> jax.Array:
  """Rows of x (float32) divided by their L2 norms."""
  x = jnp.asarray(x, jnp.float32)
  norm = jnp.linalg.norm(x, axis=-1, keepdims=True)
  return x / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)


def cosine(image_emb: jax.Array, text_emb: jax.Array) -> jax.Array:
  """P = cos(image, text): (N, D), (M, D) -> (N, M) float32."""
  return jnp.matmul(l2_normalize(image_emb), l2_normalize(text_emb).T,
                    precision=jax.lax.Precision.HIGHEST)
