"""Attributions of a model's outputs to its input image and to the hit energies, with `jax.grad`.

Image space (`(B, H, W, L)`, the shape of the input):

    gradient              d f / d x                                 where the output is sensitive
    grad_x_input          x * d f / d x                             where it takes its value from
    integrated_gradients  (x - b) * integral_0^1 df/dx(b + a (x - b)) da    (Sundararajan et al.)
    smoothgrad            mean of d f / d x over x + N(0, sigma^2)  (Smilkov et al.)

Every method is one jitted call for a whole batch: a per-example gradient vmapped over the batch,
so an example's attribution never depends on the others (BatchNorm is in eval mode regardless).

Integrated gradients satisfy completeness, sum(attribution) = f(x) - f(b); the path integral is
a trapezoid sum over `steps` + 1 points, run as a scan so memory stays at one gradient. The
models compress pixels with log1p, whose slope falls from 1 to 1/x along the path, so a uniform
grid needs thousands of steps; the default "log" grid, a = expm1(s u) / expm1(s) with u uniform
and s = log1p(max |x - b|), puts its points where the integrand changes. What remains comes from
max pooling: each switch of a channel's maximum along the path is a jump of the integrand, an
O(1/steps) error. With 256 steps the gap, summed over a batch of smoke-model events, is 0.1-0.3 %
of sum |f(x) - f(b)| (0.5-1 % at 64 steps); `explain` returns f(x) and f(b) to check it.

Hit space (`(B, N)`, the shape of the padded energies): the output as a function of the hit
energies through the interpolation operator (`steps.prepare`), so a map can be drawn on the real
hexagonal cells. The image is linear in the energies, image[p] = sum_h e_h w_hp, so with the
event features of `steps.prepare` (raw sum, layer profile, window centre) held fixed

    e_h df/de_h = sum_p e_h w_hp df/dx_p = sum_p (e_h w_hp / x_p) * (x_p df/dx_p),

i.e. grad_x_input on the hits is the image-space grad_x_input shared back onto the hits in
proportion to their contributions to each pixel (`to_cells`); so is integrated gradients, whose
hit path uses the image's path points. The hit gradient is the image gradient pulled back,
df/de_h = sum_p w_hp df/dx_p (`pull_back`). `hold_features=False` also differentiates through
the features, so the hit maps include what the network reads from them besides the image.

Outputs are the network's normalised outputs, indexed like `target_spec.names`. With the event
features fixed, the gradient of a decoded physical output is a positive per-event multiple of
these (E std for the log energies, `position_scale` for positions), so its maps are the same up
to a scale.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hgcal_jax import steps as train_steps
from hgcal_jax.data import pipeline, records, shards
from hgcal_jax.interpolation import operator

IMAGE_METHODS = ("gradient", "grad_x_input", "integrated_gradients", "smoothgrad")
HIT_METHODS = ("gradient", "grad_x_input", "integrated_gradients")
SPACINGS = ("log", "uniform")


def _example_fn(graphdef, params, rest, output: int | jax.Array) -> Callable[..., jax.Array]:
    """f(image_HxWxL, features_F) -> the scalar output of one example (eval mode).

    `output` may be traced: one compilation serves every output of the model.
    """
    model = nnx.merge(graphdef, params, rest, copy=True)

    def f(image_HxWxL, features_F):
        pred, _ = model(image_HxWxL[None], features_F[None], train=False)
        return pred[0, output]

    return f


def path_points(scale: jax.Array, steps: int, spacing: str = "log") -> tuple[jax.Array, jax.Array]:
    """Points a_k in [0, 1] and trapezoid weights c_k with integral_0^1 g(a) da ~ sum_k c_k g(a_k).

    `scale` is one example's largest |x - b| in image units, which shapes the "log" grid.
    """
    if spacing not in SPACINGS:
        raise ValueError(f"spacing {spacing!r} is not one of {SPACINGS}")
    u = jnp.linspace(0.0, 1.0, steps + 1)
    if spacing == "log":
        s = jnp.maximum(jnp.log1p(scale), 1e-3)
        a = jnp.expm1(s * u) / jnp.expm1(s)
    else:
        a = u
    da = jnp.diff(a)
    weights = 0.5 * (jnp.concatenate([da, jnp.zeros(1)]) + jnp.concatenate([jnp.zeros(1), da]))
    return a, weights


def _integrated(f: Callable[[jax.Array], jax.Array], x, baseline, steps: int, spacing: str,
                scale: jax.Array | None = None):
    """(x - b) * integral of grad f along the straight path, one example; a scan keeps one gradient."""
    delta = x - baseline
    alphas, weights = path_points(jnp.max(jnp.abs(delta)) if scale is None else scale, steps, spacing)
    grad_f = jax.grad(f)

    def body(total, ac):
        a, c = ac
        return total + c * grad_f(baseline + a * delta), None

    total, _ = jax.lax.scan(body, jnp.zeros_like(x), (alphas, weights))
    return delta * total


# --------------------------------------------------------------------------------- image space


@functools.partial(jax.jit, static_argnames=("graphdef",))
def predict(graphdef, params, rest, image_BxHxWxL, features_BxF, output: int = 0) -> jax.Array:
    """The output `output` of every example, (B,)."""
    return jax.vmap(_example_fn(graphdef, params, rest, output))(image_BxHxWxL, features_BxF)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def gradient(graphdef, params, rest, image_BxHxWxL, features_BxF, output: int = 0) -> jax.Array:
    """d output / d image for every example of the batch (vanilla gradient), shape of the image."""
    f = _example_fn(graphdef, params, rest, output)
    return jax.vmap(jax.grad(f))(image_BxHxWxL, features_BxF)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def gradient_x_input(graphdef, params, rest, image_BxHxWxL, features_BxF, output: int = 0) -> jax.Array:
    """image * d output / d image: the gradient weighted by the energy that is there."""
    return image_BxHxWxL * gradient(graphdef, params, rest, image_BxHxWxL, features_BxF, output)


@functools.partial(jax.jit, static_argnames=("graphdef", "steps", "spacing"))
def integrated_gradients(graphdef, params, rest, image_BxHxWxL, features_BxF, output: int = 0,
                         steps: int = 256, baseline_BxHxWxL: jax.Array | None = None,
                         spacing: str = "log") -> jax.Array:
    """Integrated gradients from `baseline` (default: the empty image), shape of the image.

    Completeness: the attribution of an example sums to f(image) - f(baseline).
    """
    f = _example_fn(graphdef, params, rest, output)
    baseline = jnp.zeros_like(image_BxHxWxL) if baseline_BxHxWxL is None else baseline_BxHxWxL

    def one(x, b, feat):
        return _integrated(lambda img: f(img, feat), x, b, steps, spacing)

    return jax.vmap(one)(image_BxHxWxL, baseline, features_BxF)


@functools.partial(jax.jit, static_argnames=("graphdef", "samples"))
def smoothgrad(graphdef, params, rest, image_BxHxWxL, features_BxF, key: jax.Array, output: int = 0,
               samples: int = 16, sigma: float = 0.1) -> jax.Array:
    """Mean gradient over `samples` noisy copies; noise std = sigma x (max - min) of each image."""
    grad_f = jax.grad(_example_fn(graphdef, params, rest, output))

    def one(x, feat, k):
        scale = sigma * (jnp.max(x) - jnp.min(x))

        def body(total, kk):
            # Drawn flat: XLA:CPU compiles threefry for a rank-3 shape ~20x slower than rank 1.
            noise = jax.random.normal(kk, (x.size,)).reshape(x.shape)
            return total + grad_f(x + scale * noise, feat), None

        total, _ = jax.lax.scan(body, jnp.zeros_like(x), jax.random.split(k, samples))
        return total / samples

    keys = jax.random.split(key, image_BxHxWxL.shape[0])
    return jax.vmap(one)(image_BxHxWxL, features_BxF, keys)


def image_attribution(method: str, graphdef, params, rest, image_BxHxWxL, features_BxF, *,
                      output: int = 0, steps: int = 256, key: jax.Array | None = None,
                      samples: int = 16, sigma: float = 0.1) -> jax.Array:
    """Dispatch on a method name of IMAGE_METHODS (`steps` for integrated gradients; `key`,
    `samples` and `sigma` for SmoothGrad)."""
    args = (graphdef, params, rest, image_BxHxWxL, features_BxF)
    if method == "gradient":
        return gradient(*args, output=output)
    if method == "grad_x_input":
        return gradient_x_input(*args, output=output)
    if method == "integrated_gradients":
        return integrated_gradients(*args, output=output, steps=steps)
    if method == "smoothgrad":
        key = jax.random.key(0) if key is None else key
        return smoothgrad(*args, key, output=output, samples=samples, sigma=sigma)
    raise ValueError(f"unknown method {method!r} (known: {', '.join(IMAGE_METHODS)})")


# ----------------------------------------------------------------------------------- hit space


def _freeze(stats: Mapping) -> tuple:
    """Statistics as a hashable value, so they can be a static argument of jit."""
    return tuple(sorted((k, tuple(sorted(v.items()))) for k, v in stats.items()))


def _thaw(stats: tuple) -> dict:
    return {k: dict(v) for k, v in stats}


@functools.partial(jax.jit, static_argnames=("graphdef", "target_spec", "stats", "method", "hold_features",
                                             "steps"))
def _hit_attribution(graphdef, params, rest, table, cell_weight, batch, *, target_spec, stats,
                     output, method, hold_features, steps):
    f_image = _example_fn(graphdef, params, rest, output)
    stats = _thaw(stats)

    def inputs(energies_N, example) -> train_steps.Inputs:
        one = jax.tree.map(lambda a: a[None], {**example, "energies": energies_N})
        return train_steps.prepare(table, cell_weight, one, target_spec=target_spec, stats=stats)

    def one(example):
        e = example["energies"]
        # Held features keep the event's own values all along an integration path, not just
        # their gradient out: that is what makes the hit attribution the image one pulled back.
        fixed = jax.lax.stop_gradient(inputs(e, example).features[0])

        def f(energies_N):
            x = inputs(energies_N, example)
            return f_image(x.image[0], fixed if hold_features else x.features[0])

        if method == "integrated_gradients":
            # The image's scale, not the energies': the same points as the image-space integral.
            scale = jnp.max(jnp.abs(inputs(e, example).image))
            return _integrated(f, e, jnp.zeros_like(e), steps, "log", jax.lax.stop_gradient(scale))
        g = jax.grad(f)(e)
        return g * e if method == "grad_x_input" else g

    return jax.vmap(one)(batch)


def hit_attribution(method: str, graphdef, params, rest, table: operator.DeviceTable, cell_weight,
                    batch: Mapping, *, target_spec, stats: Mapping, output: int = 0,
                    hold_features: bool = True, steps: int = 256) -> jax.Array:
    """Attribution `(B, N)` of every hit energy (0 on padding), through the interpolation operator.

    `batch` holds cells, energies, mask and truth (a pipeline batch). `hold_features` keeps the
    event features (raw sum, layer profile, window centre) at their values, so only the image path
    counts (the exact pull-back of the image attribution; see the module docstring).
    """
    if method not in HIT_METHODS:
        raise ValueError(f"unknown hit method {method!r} (known: {', '.join(HIT_METHODS)})")
    needed = {k: batch[k] for k in ("cells", "energies", "mask", "truth")}
    out = _hit_attribution(graphdef, params, rest, table, cell_weight, needed,
                           target_spec=target_spec, stats=_freeze(stats), output=output, method=method,
                           hold_features=hold_features, steps=steps)
    return jnp.where(batch["mask"], out, 0.0)


def _hit_pixels(table: operator.DeviceTable, cells_BxN, energies_BxN, mask_BxN, origin_Bx2):
    """Every (hit, slot)'s pixel index tuple into (B, H, W, L), its weight and its energy part
    (both 0 outside the image), located from the image origin like the operator does."""
    grid = table.grid
    h, w, _ = grid.image_shape
    shift = jnp.round((origin_Bx2 - jnp.array([grid.x0, grid.y0])) / grid.pixel_cm).astype(jnp.int32)
    cells = jnp.where(mask_BxN, cells_BxN, 0)
    ix = table.ix[cells] - shift[:, None, None, 0]
    iy = table.iy[cells] - shift[:, None, None, 1]
    layer = jnp.broadcast_to(table.layer_index[cells][..., None], ix.shape)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h) & mask_BxN[..., None]
    weight_BxNxK = jnp.where(inside, table.weight[cells], 0.0)
    b = jnp.arange(cells.shape[0])[:, None, None]
    pix = (b, jnp.clip(iy, 0, h - 1), jnp.clip(ix, 0, w - 1), layer)
    return pix, weight_BxNxK, jnp.where(mask_BxN, energies_BxN, 0.0)[..., None] * weight_BxNxK


@jax.jit
def to_cells(attribution_BxHxWxL, table: operator.DeviceTable, cells_BxN, energies_BxN, mask_BxN,
             origin_Bx2) -> jax.Array:
    """An input-weighted image attribution (gradient x input, integrated gradients) shared back
    onto the hits `(B, N)` in proportion to each hit's part of each pixel, e_h w_hp / x_p.
    `origin_Bx2` is the image's lower-left corner (`Interpolated.origin_cm`).

    The hits' total is the image's total over its non-empty pixels (all of it for these methods).
    """
    pix, _, part_BxNxK = _hit_pixels(table, cells_BxN, energies_BxN, mask_BxN, origin_Bx2)
    value = jnp.zeros(attribution_BxHxWxL.shape, jnp.float32).at[pix].add(part_BxNxK)[pix]
    share = jnp.where(value != 0, part_BxNxK / jnp.where(value != 0, value, 1.0), 0.0)
    return jnp.sum(share * attribution_BxHxWxL[pix], axis=-1)


@jax.jit
def pull_back(gradient_BxHxWxL, table: operator.DeviceTable, cells_BxN, mask_BxN,
              origin_Bx2) -> jax.Array:
    """A gradient-like image map (gradient, SmoothGrad) taken to the hits `(B, N)` by the chain
    rule, sum_p w_hp g_p: d f / d e_h with the event features held."""
    zeros = jnp.zeros(cells_BxN.shape, jnp.float32)
    pix, weight_BxNxK, _ = _hit_pixels(table, cells_BxN, zeros, mask_BxN, origin_Bx2)
    return jnp.sum(weight_BxNxK * gradient_BxHxWxL[pix], axis=-1)


# ------------------------------------------------------------------------ chosen events of a run


def select_events(paths: Sequence[Path], indices: Sequence[int] = (), energy_range=(None, None),
                  limit: int = 8) -> np.ndarray:
    """Indices into a split (the shards' concatenated order): `indices` as given, else the first
    `limit` events whose true energy (GeV) lies in `energy_range` (either end may be None)."""
    truth = np.concatenate([shards.read_truth(p) for p in paths])
    if len(indices):
        bad = [i for i in indices if not 0 <= i < len(truth)]
        if bad:
            raise IndexError(f"event indices {bad} are outside the split's {len(truth)} events")
        return np.asarray(indices, np.int64)
    lo, hi = energy_range
    energy = truth["energy"]
    keep = (energy >= (-np.inf if lo is None else lo)) & (energy <= (np.inf if hi is None else hi))
    chosen = np.flatnonzero(keep)[:limit]
    if not len(chosen):
        raise ValueError(f"no event has a true energy in [{lo}, {hi}] GeV")
    return chosen


def load_events(setup, paths: Sequence[Path], indices: Sequence[int]) -> tuple[dict, list[dict]]:
    """(host batch of the chosen events as the run's pipeline pads them, their truth in their own
    endcap). `setup` is the run's `train.Setup`."""
    spec = setup.pipeline_spec
    parse = pipeline.ParseEvent(spec.max_hits, setup.host_target_spec, setup.meta["target_stats"])
    source = grain.sources.ArrayRecordDataSource([str(p) for p in paths])
    blobs = [source[int(i)] for i in indices]
    rows = [parse.map(b) for b in blobs]
    batch = jax.tree.map(lambda *xs: np.stack(xs), *rows)
    return batch, [records.parse(b).truth for b in blobs]


def explain(setup, graphdef, state, batch: Mapping, methods: Sequence[str], output: int = 0,
            chunk: int = 8, steps: int = 256, hold_features: bool = True) -> dict[str, np.ndarray]:
    """Images, predictions and attributions of a host batch, computed `chunk` events at a time.

    Returns numpy arrays keyed: image, origin_cm, cells, energies, mask, pred_<target> (physical,
    +z frame), and per method image_<method> (B, H, W, L) and hits_<method> (B, N) (SmoothGrad's
    hit map is its image map taken to the hits by `pull_back`); with integrated gradients also
    f_input, f_baseline (the output at the image and at the empty image). `hold_features` is
    `hit_attribution`'s: False lets the hit maps include the event features' paths too.
    """
    unknown = [m for m in methods if m not in IMAGE_METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown} (known: {', '.join(IMAGE_METHODS)})")
    batch = {k: v for k, v in batch.items() if k not in pipeline.HOST_KEYS}
    n = len(batch["cells"])
    chunk = min(chunk, n)
    parts = []
    for start in range(0, n, chunk):
        # Pad with copies of the last event so every chunk has one shape (one compilation).
        rows = np.minimum(np.arange(start, start + chunk), n - 1)
        part = jax.tree.map(lambda x, rows=rows: jnp.asarray(x[rows]), batch)
        keep = min(chunk, n - start)
        parts.append(jax.tree.map(lambda x, keep=keep: x[:keep],
                                  _explain_chunk(setup, graphdef, state, part, methods, output, steps,
                                                 hold_features)))
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


@functools.partial(jax.jit, static_argnames=("graphdef", "target_spec", "stats"))
def _forward(graphdef, params, rest, table, cell_weight, batch, *, target_spec, stats):
    """(model inputs, image origin, decoded predictions) of a batch, in one compiled call."""
    stats = _thaw(stats)
    inputs = train_steps.prepare(table, cell_weight, batch, target_spec=target_spec, stats=stats)
    origin = operator.interpolate(table, batch["cells"], batch["energies"], batch["mask"]).origin_cm
    pred, _ = nnx.merge(graphdef, params, rest, copy=True)(inputs.image, inputs.features, train=False)
    decoded = target_spec.decode(pred, stats, centre=inputs.centre, raw_energy=inputs.raw_energy, xp=jnp)
    return inputs, origin, decoded


def _explain_chunk(setup, graphdef, state, batch, methods, output, steps,
                   hold_features) -> dict[str, np.ndarray]:
    kw = dict(target_spec=setup.target_spec, stats=setup.stats)
    inputs, origin, decoded = _forward(graphdef, state.params, state.rest, setup.table, setup.cell_weight,
                                       batch, target_spec=setup.target_spec, stats=_freeze(setup.stats))
    args = (graphdef, state.params, state.rest, inputs.image, inputs.features)
    out = {"image": inputs.image, "origin_cm": origin, "cells": batch["cells"],
           "energies": batch["energies"], "mask": batch["mask"],
           **{f"pred_{k}": v for k, v in decoded.items()}}
    for method in methods:
        out[f"image_{method}"] = image_attribution(method, *args, output=output, steps=steps)
        if method in HIT_METHODS:
            out[f"hits_{method}"] = hit_attribution(method, *args[:3], setup.table, setup.cell_weight, batch,
                                                    output=output, steps=steps, hold_features=hold_features,
                                                    **kw)
        else:
            out[f"hits_{method}"] = pull_back(out[f"image_{method}"], setup.table, batch["cells"],
                                              batch["mask"], origin)
    if "integrated_gradients" in methods:
        out["f_input"] = predict(*args, output=output)
        out["f_baseline"] = predict(graphdef, state.params, state.rest, jnp.zeros_like(inputs.image),
                                    inputs.features, output=output)
    return jax.device_get(out)
