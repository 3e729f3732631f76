"""Pieces every model shares: common options, the input transform, norms, conv blocks, the MLP head.

Each model is a `Regressor`: it transforms the raw image (inside the model, so saliency w.r.t. the
raw MIP/GeV image stays meaningful), computes an embedding with its own `embed`, and feeds the
embedding concatenated with the per-event feature vector to an MLP head. The option dataclasses
are frozen and hashable because NNX keeps them in the static graph definition.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": jax.nn.gelu, "relu": jax.nn.relu, "silu": jax.nn.silu}
NORMS = ("batch", "layer", "none")
TRANSFORMS = ("log1p", "linear")
POOLS = ("mean", "mean_max")
DOWNSAMPLES = ("stride", "pool")
CONV3D = ("auto", "native", "unfold")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise ValueError(f"model option {name}={value!r} must be one of {tuple(choices)}")


def check_ints(name: str, value: Any, *, length: int | None = None, empty_ok: bool = False) -> None:
    ok = isinstance(value, tuple) and all(isinstance(v, int) and v > 0 for v in value)
    if not ok or (length is not None and len(value) != length) or (not value and not empty_ok):
        what = f"{length} " if length else ""
        raise ValueError(f"model option {name}={value!r} must be a tuple of {what}positive ints")


@dataclasses.dataclass(frozen=True)
class Options:
    """Options every model takes (see the package docstring for what each means)."""

    norm: str = "batch"  # batch | layer | none
    dropout: float = 0.0  # on the head's hidden activations
    input_transform: str = "log1p"  # log1p: log1p(max(x, 0) / input_scale); linear: x / input_scale
    input_scale: float = 1.0  # in the image's units (MIP or GeV)
    head_widths: tuple[int, ...] = (128, 64)
    activation: str = "gelu"  # gelu | relu | silu
    bn_momentum: float = 0.99  # running-average decay of BatchNorm
    coords: bool = True  # append normalised pixel-coordinate channels (position is not translation-invariant)
    conv3d: str = "auto"  # 3D convs: native | unfold (depth taps as channels of a 2D conv) | auto

    def __post_init__(self):
        check_choice("norm", self.norm, NORMS)
        check_choice("input_transform", self.input_transform, TRANSFORMS)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_ints("head_widths", self.head_widths, empty_ok=True)
        check_choice("coords", self.coords, (True, False))
        check_choice("conv3d", self.conv3d, CONV3D)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model option dropout={self.dropout!r} must be in [0, 1)")
        if self.dropout > 0 and not self.head_widths:
            raise ValueError("model option dropout acts on the head's hidden layers: set head_widths")
        if not self.input_scale > 0:
            raise ValueError(f"model option input_scale={self.input_scale!r} must be > 0")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"model option bn_momentum={self.bn_momentum!r} must be in [0, 1)")


def transform_input(image: jax.Array, options: Options) -> jax.Array:
    """Compress the dynamic range (energies span 0 to thousands of MIP) to O(1) network inputs."""
    x = image.astype(jnp.float32) / options.input_scale
    if options.input_transform == "log1p":
        # Noise can leave small negative pixels; clamp them so log1p stays defined.
        x = jnp.log1p(jnp.maximum(x, 0.0))
    return x


def with_coords(x: jax.Array, n_spatial: int) -> jax.Array:
    """Append one channel per spatial axis holding that axis' coordinate in [-1, 1].

    Global pooling is translation-invariant; coordinate channels let the network encode the
    shower position inside the window (CoordConv). They are constants, so saliency is unchanged.
    """
    spatial = x.shape[1:1 + n_spatial]
    axes = [jnp.linspace(-1.0, 1.0, n) if n > 1 else jnp.zeros((1,)) for n in spatial]
    grids = jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1).astype(x.dtype)
    grids = jnp.broadcast_to(grids, (x.shape[0], *spatial, n_spatial))
    return jnp.concatenate([x, grids], axis=-1)


def global_pool(x: jax.Array, kind: str) -> jax.Array:
    """(B, ..., C) -> (B, C) or (B, 2C) for mean_max.

    Sum pooling would equal mean pooling times the fixed pixel count, so mean carries the same
    (extensive) information at O(1) magnitude for any image size; max keeps the shower core.
    """
    axes = tuple(range(1, x.ndim - 1))
    pooled = [jnp.mean(x, axis=axes)]
    if kind == "mean_max":
        pooled.append(jnp.max(x, axis=axes))
    return jnp.concatenate(pooled, axis=-1)


class Norm(nnx.Module):
    """BatchNorm, LayerNorm (over channels, per position) or identity, chosen by name.

    BatchNorm uses batch statistics when train=True, running averages otherwise. No axis_name:
    the training loop jits over a batch sharded on the "data" mesh axis, so the batch mean is
    already global across devices.
    """

    def __init__(self, kind: str, num_features: int, *, momentum: float, rngs: nnx.Rngs):
        self.kind = kind
        if kind == "batch":
            self.layer = nnx.BatchNorm(num_features, momentum=momentum, rngs=rngs)
        elif kind == "layer":
            self.layer = nnx.LayerNorm(num_features, rngs=rngs)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if self.kind == "batch":
            return self.layer(x, use_running_average=not train)
        if self.kind == "layer":
            return self.layer(x)
        return x


def conv_kernel_init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    """LeCun normal with fan_in = prod(shape[:-1]), exactly nnx.Conv's default, drawn as a 2D matrix.

    Same distribution; XLA:CPU compiles a rank-2 draw 3-5x faster than a rank-4/5 one, and those
    compiles dominate building a model on CPU (tests, laptops).
    """
    flat = nnx.initializers.lecun_normal()(key, (math.prod(shape[:-1]), shape[-1]), dtype)
    return flat.reshape(shape)


def conv3d_depth_unfold(x_BxHxWxDxC: jax.Array, kernel: jax.Array, strides: Sequence[int]) -> jax.Array:
    """A SAME-padded 3D convolution computed as one 2D convolution: the kernel's depth taps are
    unfolded into input channels, and the output depth positions folded into the batch.

    Equal to `lax.conv_general_dilated` on the 5D input (to float32 rounding; tested). Why by hand:
    XLA:CPU runs 3D convolutions ~5x slower than the equivalent 2D ones (a 3x3x3 conv of
    64x32x32x40x4 -> 16 channels, forward and backward: 6.8 s native, 1.3 s unfolded on 2 cores),
    which is what keeps the 3D models from training on a laptop; GPUs (cuDNN) run 3D convs well,
    so `conv3d="auto"` unfolds on CPU only. Costs kernel-depth times the input's memory.
    """
    b, h, w, d, c = x_BxHxWxDxC.shape
    kd = kernel.shape[2]
    sh, sw, sd = strides
    out_d = -(-d // sd)
    pad = max((out_d - 1) * sd + kd - d, 0)
    xp = jnp.pad(x_BxHxWxDxC, ((0, 0), (0, 0), (0, 0), (pad // 2, pad - pad // 2), (0, 0)))
    taps = [xp[:, :, :, dz: dz + (out_d - 1) * sd + 1: sd, :] for dz in range(kd)]
    x = jnp.concatenate(taps, axis=-1)  # (B, H, W, D', kd * C), tap-major like the kernel below
    x = jnp.moveaxis(x, 3, 1).reshape(b * out_d, h, w, kd * c)
    k2 = kernel.reshape(kernel.shape[0], kernel.shape[1], kd * c, kernel.shape[-1])
    y = jax.lax.conv_general_dilated(x, k2, (sh, sw), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jnp.moveaxis(y.reshape(b, out_d, *y.shape[1:]), 1, 3)


def _unfold_3d(options: Options) -> bool:
    if options.conv3d == "auto":
        return jax.default_backend() == "cpu"
    return options.conv3d == "unfold"


class ConvNormAct(nnx.Module):
    """Conv (2D or 3D by the kernel's rank), norm, activation."""

    def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int],
                 strides: int | Sequence[int], options: Options, *, rngs: nnx.Rngs, act: bool = True):
        # A bias before BatchNorm is cancelled by the mean subtraction (and gets zero gradient).
        self.conv = nnx.Conv(in_features, out_features, tuple(kernel_size), strides=strides,
                             padding="SAME", use_bias=options.norm != "batch",
                             kernel_init=conv_kernel_init, rngs=rngs)
        self.norm = Norm(options.norm, out_features, momentum=options.bn_momentum, rngs=rngs)
        self.activation = options.activation if act else None
        self.unfold_3d = len(tuple(kernel_size)) == 3 and _unfold_3d(options)

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        if x.ndim == 5 and self.unfold_3d:
            strides = self.conv.strides
            strides = (strides,) * 3 if isinstance(strides, int) else tuple(strides)
            y = conv3d_depth_unfold(x, self.conv.kernel[...], strides)
            x = y + self.conv.bias[...] if self.conv.bias is not None else y
        else:
            x = self.conv(x)
        x = self.norm(x, train=train)
        return ACTIVATIONS[self.activation](x) if self.activation else x


def downsample_pool(x: jax.Array, n_spatial: int) -> jax.Array:
    """2x max pooling over the spatial axes (SAME padding, so size-1 axes survive)."""
    window = (2,) * n_spatial
    return nnx.max_pool(x, window, strides=window, padding="SAME")


class Head(nnx.Module):
    """MLP on concat(embedding, features): Linear-activation-dropout per hidden width, then Linear."""

    def __init__(self, in_features: int, n_outputs: int, options: Options, *, rngs: nnx.Rngs):
        dims = (in_features, *options.head_widths)
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.hidden = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairs])
        self.out = nnx.Linear(dims[-1], n_outputs, rngs=rngs)
        # No stored rng stream: the key comes with each call, so the state holds only Param/BatchStat.
        self.dropout = nnx.Dropout(options.dropout)
        self.activation = options.activation

    def __call__(self, embedding_BxD: jax.Array, features_BxF: jax.Array, *, train: bool,
                 rngs: nnx.Rngs | None) -> jax.Array:
        h = jnp.concatenate([embedding_BxD, features_BxF.astype(embedding_BxD.dtype)], axis=-1)
        for layer in self.hidden:
            h = self.dropout(ACTIVATIONS[self.activation](layer(h)), deterministic=not train, rngs=rngs)
        return self.out(h)


class Regressor(nnx.Module):
    """Base of every model: input transform -> `embed` -> head, returning (outputs_BxT, aux).

    Subclasses set `self.options`, `self.image_shape`, `self.n_features` and `self.head`, and
    implement `embed(x, train=...) -> (embedding_BxD, aux)` on the transformed image.
    """

    options_class: type[Options] = Options
    options: Options
    image_shape: tuple[int, int, int]
    n_features: int
    head: Head

    def _setup(self, options: Options | None, image_shape: Sequence[int], n_features: int) -> Options:
        options = self.options_class() if options is None else options
        if not isinstance(options, self.options_class):
            raise TypeError(f"{type(self).__name__} takes {self.options_class.__name__}, got {options!r}")
        if len(image_shape) != 3:
            raise ValueError(f"image_shape {image_shape} is not (H, W, L)")
        self.options = options
        self.image_shape = tuple(int(n) for n in image_shape)
        self.n_features = int(n_features)
        return options

    def embed(self, x_BxHxWxL: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        raise NotImplementedError

    def __call__(self, image_BxHxWxL: jax.Array, features_BxF: jax.Array | None, *, train: bool,
                 rngs: nnx.Rngs | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Predict (B, n_outputs) targets. H and W may differ from image_shape (global pooling);
        L and F must match. `rngs` (nnx.Rngs(dropout=key)) is needed only if train and dropout > 0."""
        if image_BxHxWxL.ndim != 4 or image_BxHxWxL.shape[-1] != self.image_shape[-1]:
            raise ValueError(f"image shape {image_BxHxWxL.shape} is not (B, H, W, {self.image_shape[-1]})")
        batch = image_BxHxWxL.shape[0]
        if features_BxF is None:
            features_BxF = jnp.zeros((batch, 0), jnp.float32)
        if features_BxF.shape != (batch, self.n_features):
            raise ValueError(f"features shape {features_BxF.shape} is not ({batch}, {self.n_features})")
        if train and self.options.dropout > 0 and rngs is None:
            raise ValueError("train=True with dropout > 0 needs rngs=nnx.Rngs(dropout=key)")
        x = transform_input(image_BxHxWxL, self.options)
        embedding_BxD, aux = self.embed(x, train=train)
        aux = {**aux, "embedding": embedding_BxD}
        return self.head(embedding_BxD, features_BxF, train=train, rngs=rngs), aux
