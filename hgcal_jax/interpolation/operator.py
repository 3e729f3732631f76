"""The interpolation operator: sparse hits -> square images, jitted and vmapped over the batch.

    out = interpolate(table, cells_BxN, energies_BxN, mask_BxN)
    out.image          # (B, H, W, L) float32, channels-last (H = y rows, W = x columns)
    out.origin_cm      # (B, 2) x, y of the image's lower-left corner (cm)
    out.dropped_energy # (B,) energy that fell outside the image (window mode), else ~0
    out.dropped_hits   # (B,) hits with some weight outside the image

Each hit gathers its cell's K (pixel, weight) slots and scatter-adds `energy x weight` into the
image, so the cost grows with the number of hits, not pixels. The operator is linear in the
energies, hence differentiable with respect to them (`jax.grad` works through it); the window
position depends on the energies only through a floor, so it carries no gradient.

Endcaps: the reflection R: (x, y, z) -> (x, y, -z) maps the -z endcap onto +z. The table depends
only on a cell's (layer, x-y polygon), and a -z cell has the polygon of its +z twin, so a -z hit
is interpolated through its own row and lands exactly where its mirrored twin would:
canonicalisation of the hits is exact and needs no index remapping. Truth is reflected by
`hgcal_jax.targets.reflect_to_plus_z`.

Window mode: the W x W window is centred on the event's energy-weighted hit centroid (positive
energies only, so noise cannot drag it), snapped to the full grid's pixel boundaries.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from hgcal_jax.interpolation.grid import Grid
from hgcal_jax.interpolation.table import InterpolationTable


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["ix", "iy", "weight", "layer_index", "center_xy"],
                   meta_fields=["grid"])
@dataclasses.dataclass(frozen=True)
class DeviceTable:
    """The table's arrays on device; `grid` is static (part of the jit cache key)."""

    ix: jax.Array  # (C, K) int32
    iy: jax.Array  # (C, K) int32
    weight: jax.Array  # (C, K) float32
    layer_index: jax.Array  # (C,) int32
    center_xy: jax.Array  # (C, 2) float32
    grid: Grid

    @classmethod
    def from_table(cls, table: InterpolationTable, window: int | None = None,
                   device=None) -> DeviceTable:
        grid = table.grid if window is None else table.grid.with_window(window)
        put = functools.partial(jax.device_put, device=device)
        return cls(ix=put(table.ix.astype(np.int32)), iy=put(table.iy.astype(np.int32)),
                   weight=put(table.weight), layer_index=put(table.layer_index.astype(np.int32)),
                   center_xy=put(table.center_xy), grid=grid)


class Interpolated(NamedTuple):
    image: jax.Array
    origin_cm: jax.Array
    dropped_energy: jax.Array
    dropped_hits: jax.Array


class _Pixels(NamedTuple):
    """One event's (hit, slot) contributions in image coordinates."""

    iy: jax.Array  # (N, K)
    ix: jax.Array  # (N, K)
    layer: jax.Array  # (N, K)
    values: jax.Array  # (N, K) energy x weight, 0 where outside the image
    origin: jax.Array  # (2,)
    dropped_energy: jax.Array  # ()
    dropped_hits: jax.Array  # ()


def _event_pixels(table: DeviceTable, cells_N, energies_N, mask_N) -> _Pixels:
    grid = table.grid
    h, w, _ = grid.image_shape
    energies_N = jnp.where(mask_N, energies_N, 0.0).astype(jnp.float32)
    cells_N = jnp.where(mask_N, cells_N, 0)
    ix_NxK, iy_NxK = table.ix[cells_N], table.iy[cells_N]
    weight_NxK = table.weight[cells_N]
    values_NxK = energies_N[:, None] * weight_NxK
    layer_NxK = jnp.broadcast_to(table.layer_index[cells_N][:, None], ix_NxK.shape)
    if grid.window:
        positive = jnp.maximum(energies_N, 0.0)
        total = jnp.maximum(positive.sum(), 1e-30)
        centroid = (positive[:, None] * table.center_xy[cells_N]).sum(0) / total
        centre_i = jnp.floor((centroid[0] - grid.x0) / grid.pixel_cm).astype(jnp.int32)
        centre_j = jnp.floor((centroid[1] - grid.y0) / grid.pixel_cm).astype(jnp.int32)
        origin_i, origin_j = centre_i - grid.window // 2, centre_j - grid.window // 2
        ix_NxK, iy_NxK = ix_NxK - origin_i, iy_NxK - origin_j
        origin = jnp.stack([grid.x0 + origin_i * grid.pixel_cm, grid.y0 + origin_j * grid.pixel_cm])
    else:
        origin = jnp.array([grid.x0, grid.y0], jnp.float32)
    # Negative indices would wrap in the scatter (mode="drop" drops only indices past the end), so
    # every coordinate, the layer too (-1 for a layer not in the grid), is checked here.
    inside = (ix_NxK >= 0) & (ix_NxK < w) & (iy_NxK >= 0) & (iy_NxK < h) & (layer_NxK >= 0)
    dropped_hits = jnp.sum(mask_N & jnp.any(~inside & (weight_NxK > 0), axis=1))
    return _Pixels(iy_NxK, ix_NxK, layer_NxK, jnp.where(inside, values_NxK, 0.0),
                   origin.astype(jnp.float32), jnp.where(inside, 0.0, values_NxK).sum(), dropped_hits)


def _images(base_BxHxWxL, table, cells_BxN, energies_BxN, mask_BxN) -> Interpolated:
    px = jax.vmap(_event_pixels, in_axes=(None, 0, 0, 0))(table, cells_BxN, energies_BxN, mask_BxN)
    batch = jnp.arange(cells_BxN.shape[0])[:, None, None]
    # One batched scatter-add; outside contributions carry 0 and out-of-range indices are dropped.
    image = base_BxHxWxL.at[batch, px.iy, px.ix, px.layer].add(px.values, mode="drop")
    return Interpolated(image, px.origin, px.dropped_energy, px.dropped_hits)


@jax.jit
def interpolate(table: DeviceTable, cells_BxN, energies_BxN, mask_BxN) -> Interpolated:
    """Images `(B, H, W, L)` of a batch of padded hit lists; see the module docstring."""
    base = jnp.zeros((cells_BxN.shape[0], *table.grid.image_shape), jnp.float32)
    return _images(base, table, cells_BxN, energies_BxN, mask_BxN)


@functools.partial(jax.jit, donate_argnums=0)
def interpolate_into(out_BxHxWxL, table: DeviceTable, cells_BxN, energies_BxN, mask_BxN) -> Interpolated:
    """`interpolate` writing into a donated image buffer of the right shape.

    For standalone use on CPU (image production, benchmarks): XLA:CPU fills a freshly allocated
    buffer ~10x slower than it overwrites a donated one in place, and full-detector images are
    ~50 MB per event. Inside a jitted train step the image is an intermediate; use `interpolate`.
    """
    return _images(out_BxHxWxL.at[:].set(0.0), table, cells_BxN, energies_BxN, mask_BxN)


def validate_hits(n_cells: int, cells_BxN, energies_BxN, mask_BxN, event_ids=None) -> None:
    """Host-side check before the (unchecked) jitted operator.

    Raises ValueError naming the first bad events and how many hits are bad: cell indices
    outside the table (ids unknown to the geometry map to -1), NaN or infinite energies.
    Negative energies (real noise) are valid.
    """
    cells, energies, mask = (np.asarray(a) for a in (cells_BxN, energies_BxN, mask_BxN))
    ids = np.arange(len(cells)) if event_ids is None else np.asarray(event_ids)
    for what, bad in (("cell index outside the geometry", mask & ((cells < 0) | (cells >= n_cells))),
                      ("NaN or infinite energy", mask & ~np.isfinite(energies))):
        per_event = bad.sum(axis=1)
        if per_event.any():
            events = np.flatnonzero(per_event)
            listing = ", ".join(f"event {ids[e]}: {per_event[e]} hits" for e in events[:5])
            raise ValueError(f"{len(events)} events have hits with a {what} ({listing}"
                             f"{', ...' if len(events) > 5 else ''})")
