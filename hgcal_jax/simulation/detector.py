"""Detector response: which cell a point falls in, and what the readout makes of the signal.

`CellLocator` finds the cell containing each (x, y) point on a given layer and endcap: a KD-tree
over cell centres proposes the nearest few cells and an exact point-in-polygon test picks the one
that contains the point, so half cells at wafer edges are handled exactly (a nearest-centre rule
would not be: a half cell's centroid is off its hexagon's centre). Points in no cell (outside the
layer's coverage) return -1.
"""

from __future__ import annotations

import numpy as np
import scipy.spatial
import scipy.special

from hgcal_jax.geometry import types

_LAYER_SPACING = 1e4  # cm between layers in the KD-tree's third coordinate: never neighbours
_CANDIDATES = 4


def _layer_key(zside, layer):
    return (np.asarray(zside) > 0) * 100 + np.asarray(layer)


class CellLocator:
    """Point -> cell index on one geometry."""

    def __init__(self, geometry: types.Geometry):
        self.geometry = geometry
        key = _layer_key(geometry.zside, geometry.layer) * _LAYER_SPACING
        self.tree = scipy.spatial.cKDTree(np.column_stack([geometry.center[:, :2], key]),
                                          balanced_tree=False, compact_nodes=False)

    def locate(self, x, y, layer, zside) -> np.ndarray:
        """Row of the cell containing each point, or -1."""
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        key = np.broadcast_to(_layer_key(zside, layer) * _LAYER_SPACING, x.shape)
        if not len(x):
            return np.zeros(0, np.int64)
        _, cand = self.tree.query(np.column_stack([x, y, key]), k=_CANDIDATES)
        cand = np.minimum(cand, len(self.geometry) - 1)  # missing neighbours come back as n
        g = self.geometry
        # Point relative to each candidate's centre, tested against its (convex, CCW) polygon.
        px = (x[:, None] - g.center[cand, 0])[..., None]
        py = (y[:, None] - g.center[cand, 1])[..., None]
        verts = g.vertex_offset[cand].astype(np.float64)  # (P, C, 6, 2)
        count = g.n_vertices[cand][..., None]
        idx = np.arange(types.MAX_VERTICES)
        nxt = np.where(idx + 1 < count, idx + 1, 0)
        vx, vy = verts[..., 0], verts[..., 1]
        wx = np.take_along_axis(vx, nxt, axis=-1)
        wy = np.take_along_axis(vy, nxt, axis=-1)
        cross = (wx - vx) * (py - vy) - (wy - vy) * (px - vx)
        inside = np.all((cross >= -1e-9) | (idx >= count), axis=-1)
        inside &= (g.layer[cand] == np.asarray(layer)[..., None]) & \
            (g.zside[cand] == np.asarray(zside)[..., None])
        first = np.argmax(inside, axis=1)
        found = inside[np.arange(len(x)), first]
        return np.where(found, cand[np.arange(len(x)), first], -1)


def dead_cells(n_cells: int, fraction: float, seed: int) -> np.ndarray:
    """The fixed dead-cell map: a boolean per cell, the same for every event of a dataset."""
    if fraction <= 0:
        return np.zeros(n_cells, bool)
    return np.random.default_rng(seed).random(n_cells) < fraction


def noise_tail(rng: np.random.Generator, n: int, threshold: float, sigma: float) -> np.ndarray:
    """n draws of N(0, sigma) conditioned on exceeding `threshold` (inverse CDF of the tail)."""
    lo = scipy.special.ndtr(threshold / sigma)
    return sigma * scipy.special.ndtri(lo + (1.0 - lo) * rng.random(n))


def above_threshold_probability(threshold: float, sigma: float) -> float:
    return float(scipy.special.ndtr(-threshold / sigma))
