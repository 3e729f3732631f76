"""The square pixel grid that hexagonal cells are interpolated onto.

One `Grid` per geometry: pixels of `pixel_cm` (0.7 cm, as the 2018 system), `nx` columns and
`ny` rows whose lower-left corner is at (x0, y0), shared by all layers of both endcaps and
centred on the beam axis. `window = 0` means full-detector images `(ny, nx, L)`; `window = W`
means W x W crops that follow the shower, on pixel boundaries of the same full grid, so one
interpolation table serves both modes.

Image layout everywhere: channels-last `(B, H, W, L)`, H = rows (y increasing), W = columns
(x increasing), L = layers in increasing global order (`Grid.layers`).
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np

from hgcal_jax.geometry import types


@dataclasses.dataclass(frozen=True)
class Grid:
    """Pixel grid spec (hashable, so it can be static in `jax.jit`)."""

    pixel_cm: float
    nx: int
    ny: int
    x0: float
    y0: float
    layers: tuple[int, ...]
    window: int = 0

    def __post_init__(self):
        if self.pixel_cm <= 0 or self.nx <= 0 or self.ny <= 0:
            raise ValueError(f"bad grid {self}")
        if self.window < 0 or self.window > max(self.nx, self.ny):
            raise ValueError(f"window {self.window} must be in [0, {max(self.nx, self.ny)}]")

    @classmethod
    def full(cls, geometry: types.Geometry, pixel_cm: float = 0.7, window: int = 0) -> Grid:
        """The grid covering every cell of `geometry`, centred on the beam axis."""
        from hgcal_jax.interpolation import table

        reach = np.zeros(2)
        for sl in table.chunks(len(geometry), 1 << 20):
            lo, hi = table.cell_extents(geometry, sl)
            xy = geometry.center[sl, :2]
            reach = np.maximum(reach, np.maximum(np.max(xy + hi, axis=0), -np.min(xy + lo, axis=0)))
        # An even number of pixels per axis puts the beam axis on a pixel corner.
        nx, ny = (2 * math.ceil(float(r) / pixel_cm) for r in reach)
        return cls(pixel_cm=float(pixel_cm), nx=nx, ny=ny, x0=-nx * pixel_cm / 2,
                   y0=-ny * pixel_cm / 2, layers=tuple(int(x) for x in geometry.layers()),
                   window=int(window))

    def with_window(self, window: int) -> Grid:
        return dataclasses.replace(self, window=int(window))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, L) of one event's image in this grid's mode."""
        if self.window:
            return (self.window, self.window, self.n_layers)
        return (self.ny, self.nx, self.n_layers)

    def layer_index(self, layer: np.ndarray) -> np.ndarray:
        """Channel index of global layer numbers (-1 for layers not in the grid)."""
        lookup = np.full(max(self.layers) + 2, -1, dtype=np.int16)
        lookup[list(self.layers)] = np.arange(self.n_layers)
        layer = np.asarray(layer)
        return np.where((layer >= 0) & (layer <= max(self.layers)),
                        lookup[np.clip(layer, 0, max(self.layers) + 1)], -1)

    def pixel_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Full-grid pixel-centre x (nx,) and y (ny,) in cm."""
        return (self.x0 + (np.arange(self.nx) + 0.5) * self.pixel_cm,
                self.y0 + (np.arange(self.ny) + 0.5) * self.pixel_cm)

    def key(self) -> str:
        """Stable text identity of the table-relevant part (the window does not change tables)."""
        spec = dataclasses.asdict(dataclasses.replace(self, window=0))
        spec["layers"] = list(spec["layers"])
        return json.dumps(spec, sort_keys=True)
