"""Shower-like toy events on a geometry, for tests and benchmarks of the interpolation.

Not a simulation (that is `hgcal_jax.simulation`): each event picks a straight shower axis,
puts energy into the cells within `radius` of the axis on every layer, falling exponentially
with the distance to the axis and following a gamma-shaped longitudinal profile. That gives
realistic hit counts and spreads for checking conservation, barycentres and throughput.
"""

from __future__ import annotations

import numpy as np
import scipy.spatial

from hgcal_jax.geometry import types


class ToyShowers:
    """Draws padded batches `(cells_BxN, energies_BxN, mask_BxN)` on one endcap."""

    def __init__(self, geometry: types.Geometry, zside: int = 1):
        self.index = np.flatnonzero(geometry.zside == zside)
        if not len(self.index):
            raise ValueError(f"geometry has no cell on zside {zside}")
        self.layers = np.unique(geometry.layer[self.index])
        self.layer = geometry.layer[self.index]
        xy = geometry.center[self.index, :2]
        # Layers far apart in the third coordinate: one tree answers per-layer disc queries.
        self.tree = scipy.spatial.cKDTree(np.column_stack([xy, self.layer * 1e4]))
        self.xy = xy

    def event(self, rng: np.random.Generator, radius: float = 4.0, scale: float = 1.2,
              energy: float = 50.0):
        """One event: (cells, energies) with cells as rows of the full geometry."""
        seed_cell = rng.integers(len(self.index))
        x0, y0 = self.xy[seed_cell]
        slope = rng.normal(0, 0.05, size=2)  # cm of lateral drift per layer
        depth = np.arange(len(self.layers), dtype=np.float64)
        profile = depth**2.5 * np.exp(-depth / 3.0) + 1e-3
        profile /= profile.sum()
        cells, energies = [], []
        for k, layer in enumerate(self.layers):
            centre = (x0 + slope[0] * k, y0 + slope[1] * k, layer * 1e4)
            near = np.asarray(self.tree.query_ball_point(centre, radius), dtype=np.int64)
            if not len(near):
                continue
            r = np.hypot(self.xy[near, 0] - centre[0], self.xy[near, 1] - centre[1])
            share = np.exp(-r / scale)
            share *= rng.gamma(4.0, 0.25, size=len(near))  # sampling fluctuations
            cells.append(self.index[near])
            energies.append(energy * profile[k] * share / share.sum())
        return np.concatenate(cells), np.concatenate(energies).astype(np.float32)

    def batch(self, rng: np.random.Generator, batch: int, max_hits: int, **kwargs):
        """A padded batch; hits beyond max_hits (lowest energies) are dropped."""
        cells = np.zeros((batch, max_hits), np.int32)
        energies = np.zeros((batch, max_hits), np.float32)
        mask = np.zeros((batch, max_hits), bool)
        for b in range(batch):
            c, e = self.event(rng, **kwargs)
            keep = np.argsort(-e)[:max_hits]
            cells[b, : len(keep)], energies[b, : len(keep)], mask[b, : len(keep)] = c[keep], e[keep], True
        return cells, energies, mask
