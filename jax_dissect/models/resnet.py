"""ResNet-18/50 in Flax linen with torchvision's structure and module names.

Layout is NHWC (torchvision is NCHW); BatchNorm always uses its running
statistics (inference only). Submodules are named as in torchvision's
`torchvision.models.resnet`, so the dotted path of a module here is the same
string as its name in PyTorch (`conv1`, `layer1`, `layer4.2.conv3`,
`layer2.0.downsample.0`, `fc`) and a torchvision state dict maps onto the
Flax variables key by key (see convert.py).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# torchvision's nn.BatchNorm2d default epsilon.
BN_EPSILON = 1e-5


def _conv(features: int, kernel: int, stride: int, name: str,
          dtype: Any) -> nn.Conv:
  """A bias-free conv with torchvision's symmetric padding (kernel // 2)."""
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), use_bias=False,
                 dtype=dtype, name=name)


def _batch_norm(name: str, dtype: Any) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=True, momentum=0.9,
                      epsilon=BN_EPSILON, dtype=dtype, name=name)


class Downsample(nn.Module):
  """The projection shortcut: 1x1 conv ("0") then BatchNorm ("1").

  Attributes:
    features: output channels.
    stride: spatial stride of the 1x1 conv.
  """
  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C_in) -> (B, H / stride, W / stride, features)."""
    x = _conv(self.features, 1, self.stride, "0", self.dtype)(x)
    return _batch_norm("1", self.dtype)(x)


class BasicBlock(nn.Module):
  """ResNet-18/34 block: two 3x3 convs and a residual connection.

  Attributes:
    planes: output channels (expansion 1).
    stride: stride of the first 3x3 conv.
    downsample: whether the shortcut is a projection (`Downsample`).
  """
  planes: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C_in) -> (B, H / stride, W / stride, planes)."""
    identity = x
    out = _conv(self.planes, 3, self.stride, "conv1", self.dtype)(x)
    out = nn.relu(_batch_norm("bn1", self.dtype)(out))
    out = _conv(self.planes, 3, 1, "conv2", self.dtype)(out)
    out = _batch_norm("bn2", self.dtype)(out)
    if self.downsample:
      identity = Downsample(self.planes, self.stride, self.dtype,
                            name="downsample")(x)
    return nn.relu(out + identity)


class Bottleneck(nn.Module):
  """ResNet-50/101/152 block: 1x1, 3x3 (strided, as torchvision), 1x1 convs.

  Attributes:
    planes: width of the inner convs; the output has 4 * planes channels.
    stride: stride of the 3x3 conv (conv2).
    downsample: whether the shortcut is a projection (`Downsample`).
  """
  planes: int
  stride: int = 1
  downsample: bool = False
  dtype: Any = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C_in) -> (B, H / stride, W / stride, 4 * planes)."""
    identity = x
    out = _conv(self.planes, 1, 1, "conv1", self.dtype)(x)
    out = nn.relu(_batch_norm("bn1", self.dtype)(out))
    out = _conv(self.planes, 3, self.stride, "conv2", self.dtype)(out)
    out = nn.relu(_batch_norm("bn2", self.dtype)(out))
    out = _conv(self.planes * self.expansion, 1, 1, "conv3", self.dtype)(out)
    out = _batch_norm("bn3", self.dtype)(out)
    if self.downsample:
      identity = Downsample(self.planes * self.expansion, self.stride,
                            self.dtype, name="downsample")(x)
    return nn.relu(out + identity)


class ResLayer(nn.Module):
  """A stage of blocks named "0", "1", ... (torchvision's nn.Sequential).

  Attributes:
    block: BasicBlock or Bottleneck.
    planes: the blocks' `planes`.
    num_blocks: number of blocks.
    stride: stride of the first block.
    in_channels: channels of the stage's input (decides the projection).
  """
  block: type[nn.Module]
  planes: int
  num_blocks: int
  stride: int
  in_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, in_channels) -> (B, H / stride, W / stride, C_out)."""
    out_channels = self.planes * self.block.expansion
    for i in range(self.num_blocks):
      stride = self.stride if i == 0 else 1
      downsample = i == 0 and (stride != 1 or self.in_channels != out_channels)
      x = self.block(self.planes, stride, downsample, self.dtype,
                     name=str(i))(x)
    return x


class MaxPool(nn.Module):
  """torchvision's stem MaxPool2d(kernel_size=3, stride=2, padding=1)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, ceil(H / 2), ceil(W / 2), C); pads with -inf."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class GlobalAvgPool(nn.Module):
  """torchvision's AdaptiveAvgPool2d((1, 1)), keeping NHWC."""

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, 1, 1, C)."""
    return jnp.mean(x, axis=(1, 2), keepdims=True)


class ResNet(nn.Module):
  """torchvision's ResNet, NHWC, inference mode.

  Attributes:
    block: BasicBlock or Bottleneck.
    stage_sizes: number of blocks of layer1..layer4.
    num_classes: outputs of `fc`.
    dtype: computation dtype (parameters stay float32).
    cifar_stem: the stem of CIFAR ResNets (timm/"resnet18_cifar100" style):
      conv1 is 3x3 stride 1 and there is no max pool, for 32x32 inputs.
  """
  block: type[nn.Module]
  stage_sizes: Sequence[int]
  num_classes: int = 1000
  dtype: Any = jnp.float32
  cifar_stem: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps images (B, H, W, 3), normalized, to logits (B, num_classes)."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(
          f"ResNet expects NHWC images of shape (B, H, W, 3); got {x.shape}")
    if self.cifar_stem:
      x = _conv(64, 3, 1, "conv1", self.dtype)(x.astype(self.dtype))
      x = nn.relu(_batch_norm("bn1", self.dtype)(x))
    else:
      x = _conv(64, 7, 2, "conv1", self.dtype)(x.astype(self.dtype))
      x = nn.relu(_batch_norm("bn1", self.dtype)(x))
      x = MaxPool(name="maxpool")(x)
    in_channels = 64
    for i, num_blocks in enumerate(self.stage_sizes):
      planes = 64 * 2**i
      x = ResLayer(self.block, planes, num_blocks, 1 if i == 0 else 2,
                   in_channels, self.dtype, name=f"layer{i + 1}")(x)
      in_channels = planes * self.block.expansion
    x = GlobalAvgPool(name="avgpool")(x)
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="fc")(x)


ResNet18 = functools.partial(ResNet, block=BasicBlock, stage_sizes=(2, 2, 2, 2))
ResNet34 = functools.partial(ResNet, block=BasicBlock, stage_sizes=(3, 4, 6, 3))
ResNet50 = functools.partial(ResNet, block=Bottleneck, stage_sizes=(3, 4, 6, 3))
