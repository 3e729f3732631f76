"""A residual 2D CNN with a global-z stem, sized for the full 542 x 548 x 40 detector grid.

The stem convolution takes all L layers as channels (as `cnn.GlobalZCNN`) and downsamples by
`stem_stride`, then residual stages halve H and W at each stage after the first, so the default
(stem 2, four stages) reduces 542 x 548 to 34 x 35 before global pooling, with a receptive field
that covers a whole shower. Basic blocks (two 3x3 convs), post-activation, a 1x1 projection on
the shortcut whenever the width or resolution changes. Works on any H, W (e.g. 32 x 32 windows).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
from flax import nnx

from hgcal_jax.models import layers


@dataclasses.dataclass(frozen=True)
class ResNetCNNOptions(layers.Options):
    widths: tuple[int, ...] = (32, 64, 128, 256)  # one stage per entry
    blocks: int = 2  # residual blocks per stage
    kernel_size: int = 3
    stem_kernel: int = 5
    stem_stride: int = 2
    pool: str = "mean_max"

    def __post_init__(self):
        super().__post_init__()
        layers.check_ints("widths", self.widths)
        for name in ("blocks", "kernel_size", "stem_kernel", "stem_stride"):
            layers.check_ints(name, (getattr(self, name),))
        layers.check_choice("pool", self.pool, layers.POOLS)


class ResidualBlock(nnx.Module):
    """act(norm(conv(act(norm(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int, options: ResNetCNNOptions, *, rngs: nnx.Rngs):
        k = (options.kernel_size,) * 2
        self.conv1 = layers.ConvNormAct(c_in, c_out, k, stride, options, rngs=rngs)
        self.conv2 = layers.ConvNormAct(c_out, c_out, k, 1, options, rngs=rngs, act=False)
        self.shortcut = (layers.ConvNormAct(c_in, c_out, (1, 1), stride, options, rngs=rngs, act=False)
                         if stride != 1 or c_in != c_out else None)
        self.activation = options.activation

    def __call__(self, x_BxHxWxC: jax.Array, *, train: bool) -> jax.Array:
        y = self.conv2(self.conv1(x_BxHxWxC, train=train), train=train)
        skip = self.shortcut(x_BxHxWxC, train=train) if self.shortcut is not None else x_BxHxWxC
        return layers.ACTIVATIONS[self.activation](y + skip)


class ResNetCNN(layers.Regressor):
    """Global-z stem + residual stages. aux: first_conv (stem output), embedding."""

    options_class = ResNetCNNOptions

    def __init__(self, options: ResNetCNNOptions | None = None, *, image_shape: Sequence[int],
                 n_features: int, n_outputs: int, rngs: nnx.Rngs):
        o = self._setup(options, image_shape, n_features)
        c_in = self.image_shape[-1] + (2 if o.coords else 0)
        self.stem = layers.ConvNormAct(c_in, o.widths[0], (o.stem_kernel,) * 2, o.stem_stride, o, rngs=rngs)
        c_in, blocks = o.widths[0], []
        for stage, width in enumerate(o.widths):
            for j in range(o.blocks):
                stride = 2 if stage > 0 and j == 0 else 1
                blocks.append(ResidualBlock(c_in, width, stride, o, rngs=rngs))
                c_in = width
        self.blocks = nnx.List(blocks)
        pooled = c_in * (2 if o.pool == "mean_max" else 1)
        self.head = layers.Head(pooled + self.n_features, n_outputs, o, rngs=rngs)

    def embed(self, x_BxHxWxL: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        x = layers.with_coords(x_BxHxWxL, 2) if self.options.coords else x_BxHxWxL
        x = self.stem(x, train=train)
        aux = {"first_conv": x}
        for block in self.blocks:
            x = block(x, train=train)
        return layers.global_pool(x, self.options.pool), aux
