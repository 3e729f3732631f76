"""A recurrent regressor that reads the calorimeter layer by layer, like a shower develops.

`LayerRNN`: a small 2D CNN with the same weights for every layer encodes each layer's (H, W)
image to a vector, giving a (B, L, E) sequence; a recurrence (vanilla tanh RNN, LSTM or GRU)
runs over it with `jax.lax.scan`; the head reads either every step or the last one.

The 2018 LSTM never trained. What is different here, and why:
- readout "all" (default) feeds the concatenation of all L per-layer hidden states to the head, so
  every layer has a one-hop gradient path to the loss (the 2018 fix for vanishing gradients) and
  the head sees the longitudinal profile directly; "last" reads only the final state(s);
- recurrent kernels are orthogonal per gate (gradients neither explode nor vanish at init), input
  kernels LeCun-normal, biases zero except the LSTM forget gate, which starts at 1 so the cell
  remembers by default;
- the sequence inputs pass through LayerNorm (unless norm="none"), so the gates start in their
  responsive range whatever the energy scale of the layer encodings;
- the input projections of all steps are one batched matmul outside the scan; only h @ W_rec is
  sequential.
`bidirectional` adds a second recurrence over the reversed sequence: per-step features and the
"last" readout (forward state after layer L-1, backward state after layer 0) double to 2 x hidden.
Gate layouts along the last axis: LSTM (i, f, g, o), GRU (r, z, n) with the n-gate recurrent bias
inside the reset product (the cuDNN form), RNN (h).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from hgcal_jax.models import layers

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
READOUTS = ("all", "last")


@dataclasses.dataclass(frozen=True)
class LayerRNNOptions(layers.Options):
    encoder_channels: tuple[int, ...] = (16, 32)  # per-layer CNN; every conv halves H and W
    encoder_kernel: int = 3
    embed: int = 64  # per-layer vector size E fed to the recurrence
    cell: str = "lstm"  # rnn | lstm | gru
    hidden: int = 64
    readout: str = "all"  # all: concat of every step's hidden state | last: final state(s) only
    bidirectional: bool = False

    def __post_init__(self):
        super().__post_init__()
        layers.check_ints("encoder_channels", self.encoder_channels)
        for name in ("encoder_kernel", "embed", "hidden"):
            layers.check_ints(name, (getattr(self, name),))
        layers.check_choice("cell", self.cell, tuple(GATES))
        layers.check_choice("readout", self.readout, READOUTS)
        layers.check_choice("bidirectional", self.bidirectional, (True, False))


class Recurrence(nnx.Module):
    """One direction of an RNN/LSTM/GRU over (B, L, E) -> (B, L, hidden)."""

    def __init__(self, cell: str, in_features: int, hidden: int, *, reverse: bool, rngs: nnx.Rngs):
        gates = GATES[cell]
        self.cell, self.hidden, self.reverse = cell, hidden, reverse
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (in_features, gates * hidden)))
        orthogonal = nnx.initializers.orthogonal()
        keys = jax.random.split(rngs.params(), gates)
        self.recurrent_kernel = nnx.Param(
            jnp.concatenate([orthogonal(k, (hidden, hidden)) for k in keys], axis=1))
        bias = jnp.zeros((gates * hidden,))
        if cell == "lstm":
            bias = bias.at[hidden:2 * hidden].set(1.0)  # forget gate
        self.bias = nnx.Param(bias)
        if cell == "gru":
            self.recurrent_bias = nnx.Param(jnp.zeros((hidden,)))

    def __call__(self, x_BxLxE: jax.Array) -> jax.Array:
        xw_LxBxG = jnp.einsum("ble,eg->lbg", x_BxLxE, self.kernel[...]) + self.bias[...]
        if self.reverse:
            xw_LxBxG = xw_LxBxG[::-1]
        w_HxG = self.recurrent_kernel[...]
        h0_BxH = jnp.zeros((x_BxLxE.shape[0], self.hidden), xw_LxBxG.dtype)

        if self.cell == "lstm":
            def step(carry, xw_BxG):
                h, c = carry
                i, f, g, o = jnp.split(xw_BxG + h @ w_HxG, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), h
            carry = (h0_BxH, h0_BxH)
        elif self.cell == "gru":
            b_hn = self.recurrent_bias[...]

            def step(h, xw_BxG):
                xr, xz, xn = jnp.split(xw_BxG, 3, axis=-1)
                hr, hz, hn = jnp.split(h @ w_HxG, 3, axis=-1)
                r, z = jax.nn.sigmoid(xr + hr), jax.nn.sigmoid(xz + hz)
                n = jnp.tanh(xn + r * (hn + b_hn))
                h = (1.0 - z) * n + z * h
                return h, h
            carry = h0_BxH
        else:
            def step(h, xw_BxG):
                h = jnp.tanh(xw_BxG + h @ w_HxG)
                return h, h
            carry = h0_BxH

        _, h_LxBxH = jax.lax.scan(step, carry, xw_LxBxG)
        if self.reverse:
            h_LxBxH = h_LxBxH[::-1]  # back to layer order
        return jnp.swapaxes(h_LxBxH, 0, 1)


class LayerEncoder(nnx.Module):
    """Shared per-layer CNN: (N, H, W, 1) -> (N, E), N = B x L."""

    def __init__(self, options: LayerRNNOptions, *, rngs: nnx.Rngs):
        c_in, convs = 1 + (2 if options.coords else 0), []
        kernel = (options.encoder_kernel,) * 2
        for c_out in options.encoder_channels:
            convs.append(layers.ConvNormAct(c_in, c_out, kernel, 2, options, rngs=rngs))
            c_in = c_out
        self.convs = nnx.List(convs)
        self.proj = nnx.Linear(2 * c_in, options.embed, rngs=rngs)
        self.coords = options.coords

    def __call__(self, x_NxHxWx1: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
        x = layers.with_coords(x_NxHxWx1, 2) if self.coords else x_NxHxWx1
        first = None
        for conv in self.convs:
            x = conv(x, train=train)
            first = x if first is None else first
        return self.proj(layers.global_pool(x, "mean_max")), first


class LayerRNN(layers.Regressor):
    """Per-layer CNN encoder + recurrence over layers.

    aux: sequence (B, L, D) per-layer hidden states (D = hidden, x2 if bidirectional),
    first_conv (B, L, H/2, W/2, C0) first encoder conv, embedding ((B, L x D) for readout "all",
    (B, D) for "last").
    """

    options_class = LayerRNNOptions

    def __init__(self, options: LayerRNNOptions | None = None, *, image_shape: Sequence[int],
                 n_features: int, n_outputs: int, rngs: nnx.Rngs):
        o = self._setup(options, image_shape, n_features)
        self.encoder = LayerEncoder(o, rngs=rngs)
        self.seq_norm = nnx.LayerNorm(o.embed, rngs=rngs) if o.norm != "none" else None
        self.rnn_forward = Recurrence(o.cell, o.embed, o.hidden, reverse=False, rngs=rngs)
        self.rnn_backward = (Recurrence(o.cell, o.embed, o.hidden, reverse=True, rngs=rngs)
                             if o.bidirectional else None)
        d = o.hidden * (2 if o.bidirectional else 1)
        width = d * self.image_shape[-1] if o.readout == "all" else d
        self.head = layers.Head(width + self.n_features, n_outputs, o, rngs=rngs)

    def embed(self, x_BxHxWxL: jax.Array, *, train: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
        b, h, w, n_layers = x_BxHxWxL.shape
        # Layers become batch entries so one encoder (same weights) sees every layer.
        x_NxHxWx1 = jnp.moveaxis(x_BxHxWxL, -1, 1).reshape(b * n_layers, h, w, 1)
        e_NxE, first = self.encoder(x_NxHxWx1, train=train)
        seq_BxLxE = e_NxE.reshape(b, n_layers, -1)
        if self.seq_norm is not None:
            seq_BxLxE = self.seq_norm(seq_BxLxE)
        directions = [self.rnn_forward(seq_BxLxE)]
        last = [directions[0][:, -1]]
        if self.rnn_backward is not None:
            directions.append(self.rnn_backward(seq_BxLxE))
            last.append(directions[1][:, 0])  # the backward pass ends at layer 0
        seq_BxLxD = jnp.concatenate(directions, axis=-1)
        if self.options.readout == "all":
            embedding = seq_BxLxD.reshape(b, -1)
        else:
            embedding = jnp.concatenate(last, axis=-1)
        aux = {"sequence": seq_BxLxD, "first_conv": first.reshape(b, n_layers, *first.shape[1:])}
        return embedding, aux
