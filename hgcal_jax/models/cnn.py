"""Convolutional regressors on (B, H, W, L) calorimeter images: global-z, local 3D and inception.

- `GlobalZCNN` treats the L layers as channels, so the first convolution sees the whole
  longitudinal profile at once (the 2018 change that took the energy error from 5-10 % to 3 %).
- `Local3DCNN` convolves small (x, y, depth) kernels over the image as a 3D volume.
- `InceptionCNN` runs both side by side in each block.

All end in global pooling (mean, or mean and max: see `layers.global_pool`) and the shared MLP
head; pixel-coordinate channels (`coords`) keep the absolute position that pooling would lose.
The 3D models keep full depth at full x-y resolution in their first layer, so they are meant for
shower windows; `resnet.ResNetCNN` is the model for the full 542 x 548 grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hgcal_jax.models import layers


def _kernel3(options: layers.Options, name: str) -> None:
    """Accept an int 3D kernel size as (k, k, k)."""
    value = getattr(options, name)
    if isinstance(value, int):
        object.__setattr__(options, name, (value,) * 3)
    layers.check_ints(name, getattr(options, name), length=3)


def _conv_stack(convs, x: jax.Array, dims: int, options, *, train: bool):
    """Runs a plain conv stack (2D or 3D), pooling between convs when asked; returns the globally
    pooled embedding and aux {"first_conv": the first conv's activations}."""
    aux = {}
    for i, conv in enumerate(convs):
        if i > 0 and options.downsample == "pool":
            x = layers.downsample_pool(x, dims)
        x = conv(x, train=train)
        if i == 0:
            aux["first_conv"] = x
    return layers.global_pool(x, options.pool), aux


@dataclasses.dataclass(frozen=True)
class GlobalZCNNOptions(layers.Options):
    channels: tuple[int, ...] = (64, 64, 128)  # one conv per entry; every one after the first halves H, W
    kernel_size: int = 3
    downsample: str = "stride"  # stride: stride-2 convs | pool: 2x2 max pool before each later conv
    pool: str = "mean_max"  # global pooling: mean | mean_max

    def __post_init__(self):
        super().__post_init__()
        layers.check_ints("channels", self.channels)
        layers.check_ints("kernel_size", (self.kernel_size,))
        layers.check_choice("downsample", self.downsample, layers.DOWNSAMPLES)
        layers.check_choice("pool", self.pool, layers.POOLS)


class GlobalZCNN(layers.Regressor):
    """2D CNN with layers as channels. aux: first_conv (B, H, W, C0), embedding."""

    options_class = GlobalZCNNOptions

    def __init__(self, options: GlobalZCNNOptions | None = None, *, image_shape: Sequence[int],
                 n_features: int, n_outputs: int, rngs: nnx.Rngs):
        o = self._setup(options, image_shape, n_features)
        c_in = self.image_shape[-1] + (2 if o.coords else 0)
        convs = []
        for i, c_out in enumerate(o.channels):
            stride = 2 if i > 0 and o.downsample == "stride" else 1
            convs.append(layers.ConvNormAct(c_in, c_out, (o.kernel_size,) * 2, stride, o, rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        width = c_in * (2 if o.pool == "mean_max" else 1)
        self.head = layers.Head(width + self.n_features, n_outputs, o, rngs=rngs)

    def embed(self, x_BxHxWxL: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        x = layers.with_coords(x_BxHxWxL, 2) if self.options.coords else x_BxHxWxL
        return _conv_stack(self.convs, x, 2, self.options, train=train)


@dataclasses.dataclass(frozen=True)
class Local3DCNNOptions(layers.Options):
    channels: tuple[int, ...] = (16, 32, 64)  # every conv after the first halves H, W and depth
    kernel_size: tuple[int, int, int] = (3, 3, 3)  # (y, x, depth)
    downsample: str = "stride"
    pool: str = "mean_max"

    def __post_init__(self):
        super().__post_init__()
        layers.check_ints("channels", self.channels)
        _kernel3(self, "kernel_size")
        layers.check_choice("downsample", self.downsample, layers.DOWNSAMPLES)
        layers.check_choice("pool", self.pool, layers.POOLS)


class Local3DCNN(layers.Regressor):
    """3D CNN on (B, H, W, L, 1). aux: first_conv (B, H, W, L, C0), embedding."""

    options_class = Local3DCNNOptions

    def __init__(self, options: Local3DCNNOptions | None = None, *, image_shape: Sequence[int],
                 n_features: int, n_outputs: int, rngs: nnx.Rngs):
        o = self._setup(options, image_shape, n_features)
        c_in = 1 + (3 if o.coords else 0)
        convs = []
        for i, c_out in enumerate(o.channels):
            stride = 2 if i > 0 and o.downsample == "stride" else 1
            convs.append(layers.ConvNormAct(c_in, c_out, o.kernel_size, stride, o, rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        width = c_in * (2 if o.pool == "mean_max" else 1)
        self.head = layers.Head(width + self.n_features, n_outputs, o, rngs=rngs)

    def embed(self, x_BxHxWxL: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        x = x_BxHxWxL[..., None]
        x = layers.with_coords(x, 3) if self.options.coords else x
        return _conv_stack(self.convs, x, 3, self.options, train=train)


@dataclasses.dataclass(frozen=True)
class InceptionCNNOptions(layers.Options):
    local_channels: tuple[int, ...] = (8, 16, 32)  # 3D branch width per block
    global_channels: tuple[int, ...] = (16, 32, 64)  # full-depth 2D branch width per block
    local_kernel: tuple[int, int, int] = (3, 3, 3)
    global_kernel: int = 3
    pool: str = "mean_max"

    def __post_init__(self):
        super().__post_init__()
        layers.check_ints("local_channels", self.local_channels)
        layers.check_ints("global_channels", self.global_channels, length=len(self.local_channels))
        _kernel3(self, "local_kernel")
        layers.check_ints("global_kernel", (self.global_kernel,))
        layers.check_choice("pool", self.pool, layers.POOLS)


class InceptionBlock(nnx.Module):
    """(B, H, W, D, C) -> (B, H', W', D', c_local + c_global).

    Local branch: a small 3D conv. Global branch: a 2D conv over the same volume with depth and
    channels merged, i.e. it sees all D layers at once; its (B, H', W', c) output is broadcast over
    depth. Keeping the 3D layout (rather than flattening the local branch into channels) lets the
    local branch of the next block still see which layer is which.
    """

    def __init__(self, depth: int, c_in: int, c_local: int, c_global: int, stride: int,
                 options: InceptionCNNOptions, *, rngs: nnx.Rngs):
        self.local = layers.ConvNormAct(c_in, c_local, options.local_kernel, stride, options, rngs=rngs)
        self.glob = layers.ConvNormAct(depth * c_in, c_global, (options.global_kernel,) * 2, stride,
                                       options, rngs=rngs)

    def __call__(self, x_BxHxWxDxC: jax.Array, *, train: bool) -> jax.Array:
        b, h, w, d, c = x_BxHxWxDxC.shape
        local = self.local(x_BxHxWxDxC, train=train)
        glob_BxHxWxG = self.glob(x_BxHxWxDxC.reshape(b, h, w, d * c), train=train)
        glob = jnp.broadcast_to(glob_BxHxWxG[:, :, :, None, :], (*local.shape[:4], glob_BxHxWxG.shape[-1]))
        return jnp.concatenate([local, glob], axis=-1)


class InceptionCNN(layers.Regressor):
    """Stack of inception blocks (every block after the first halves H, W and depth).

    aux: first_conv (B, H, W, L, c_local0 + c_global0), embedding.
    """

    options_class = InceptionCNNOptions

    def __init__(self, options: InceptionCNNOptions | None = None, *, image_shape: Sequence[int],
                 n_features: int, n_outputs: int, rngs: nnx.Rngs):
        o = self._setup(options, image_shape, n_features)
        depth, c_in = self.image_shape[-1], 1 + (3 if o.coords else 0)
        blocks = []
        for i, (c_local, c_global) in enumerate(zip(o.local_channels, o.global_channels, strict=True)):
            stride = 2 if i > 0 else 1
            blocks.append(InceptionBlock(depth, c_in, c_local, c_global, stride, o, rngs=rngs))
            depth, c_in = -(-depth // stride), c_local + c_global  # SAME padding: ceil(D / stride)
        self.blocks = nnx.List(blocks)
        width = c_in * (2 if o.pool == "mean_max" else 1)
        self.head = layers.Head(width + self.n_features, n_outputs, o, rngs=rngs)

    def embed(self, x_BxHxWxL: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        x = x_BxHxWxL[..., None]
        x = layers.with_coords(x, 3) if self.options.coords else x
        aux = {}
        for i, block in enumerate(self.blocks):
            x = block(x, train=train)
            if i == 0:
                aux["first_conv"] = x
        return layers.global_pool(x, self.options.pool), aux
