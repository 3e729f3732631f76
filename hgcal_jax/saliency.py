"""Attributions of model outputs with respect to the input image, computed with `jax.grad`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx


@functools.partial(jax.jit, static_argnames=("graphdef", "output"))
def gradient(graphdef, params, rest, image_BxHxWxL, features_BxF, output: int = 0):
    """d output / d image for every example of the batch (vanilla gradient), shape of the image.

    Examples are independent in eval mode, so the gradient of the batch sum is every example's
    own gradient: one backward pass for the whole batch.
    """

    def total(image):
        model = nnx.merge(graphdef, params, rest, copy=True)
        pred, _ = model(image, features_BxF, train=False)
        return jnp.sum(pred[:, output])

    return jax.grad(total)(image_BxHxWxL)
