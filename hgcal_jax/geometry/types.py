"""The `Geometry` type: every silicon cell of both HGCAL endcaps, as flat numpy arrays.

One row per cell. Polygons are stored as float32 vertex offsets from the float64 cell centre:
offsets are below 1 cm, so float32 keeps them to ~1e-8 cm while halving the memory of the
full 2-endcap geometry (millions of cells); `polygons()` returns absolute float64 vertices.

Layers are global and 1-based (2018 v8: EE 1-28, FH 29-40); zside is +1 or -1.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

import numpy as np

MAX_VERTICES = 6

# Cell types. "half" covers every cell clipped by a wafer edge (halves and corner thirds).
LARGE, SMALL, HALF = 0, 1, 2
CELL_TYPE_NAMES = {LARGE: "large", SMALL: "small", HALF: "half"}
# Wafer types: coarse (large cells) and fine (small cells, the high-fluence inner region).
COARSE, FINE = 0, 1

# Per-cell arrays with their dtypes and trailing shapes: the single source of truth for the
# record layout, the npz format and the content hash.
FIELDS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "id": (np.dtype(np.int64), ()),
    "layer": (np.dtype(np.int16), ()),
    "zside": (np.dtype(np.int8), ()),
    "center": (np.dtype(np.float64), (3,)),
    "vertex_offset": (np.dtype(np.float32), (MAX_VERTICES, 2)),
    "n_vertices": (np.dtype(np.int8), ()),
    "cell_type": (np.dtype(np.int8), ()),
    "wafer": (np.dtype(np.int32), ()),
    "wafer_type": (np.dtype(np.int8), ()),
    "cell": (np.dtype(np.int32), ()),
}


@dataclasses.dataclass(frozen=True, eq=False)
class Geometry:
    """All cells of a detector geometry.

    Attributes:
      id: 64-bit detector id (CMSSW HGCalDetId layout for the synthetic and cmssw sources, the
        ntuple's `rechit_detid` for ntuple-derived geometries).
      layer: global layer, 1-based.
      zside: +1 or -1.
      center: `(N, 3)` cell centre x, y, z in cm: the area centroid of the cell polygon for
        the synthetic source, the file's cell position for the cmssw and ntuple sources.
      vertex_offset: `(N, 6, 2)` polygon vertices minus the centre's x, y (cm), counter-clockwise,
        zero-padded past `n_vertices`.
      n_vertices: valid vertices per cell (3 to 6).
      cell_type: LARGE, SMALL or HALF (clipped at a wafer edge).
      wafer: wafer number (the same wafer position has the same number on every layer).
      wafer_type: COARSE (large cells) or FINE (small cells).
      cell: cell index inside its wafer.
      source: which builder made it ("synthetic", "cmssw", "ntuple").
      params: the builder's parameters (JSON-serialisable), kept for provenance.
    """

    id: np.ndarray
    layer: np.ndarray
    zside: np.ndarray
    center: np.ndarray
    vertex_offset: np.ndarray
    n_vertices: np.ndarray
    cell_type: np.ndarray
    wafer: np.ndarray
    wafer_type: np.ndarray
    cell: np.ndarray
    source: str = "synthetic"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        n = len(self.id)
        # Params live in JSON inside the npz: normalise now so a round trip compares equal.
        object.__setattr__(self, "params", json.loads(json.dumps(self.params)))
        for name, (dtype, shape) in FIELDS.items():
            value = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if value.shape != (n, *shape):
                raise ValueError(f"Geometry.{name} has shape {value.shape}, expected {(n, *shape)}")
            object.__setattr__(self, name, value)
        # Sort-based check: numpy's hash-based np.unique is ~5x slower on millions of ids.
        sorted_ids = np.sort(self.id)
        duplicated = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        if len(duplicated):
            raise ValueError(f"Geometry cell ids are not unique: {len(duplicated)} repeats, "
                             f"e.g. {int(duplicated[0])}")

    def __len__(self) -> int:
        return len(self.id)

    @property
    def x(self) -> np.ndarray:
        return self.center[:, 0]

    @property
    def y(self) -> np.ndarray:
        return self.center[:, 1]

    @property
    def z(self) -> np.ndarray:
        return self.center[:, 2]

    def polygons(self, index=slice(None)) -> tuple[np.ndarray, np.ndarray]:
        """Absolute polygons `(verts_Nx6x2 float64, count_N)` of the selected cells."""
        offsets = self.vertex_offset[index].astype(np.float64)
        count = self.n_vertices[index]
        valid = np.arange(MAX_VERTICES)[None, :] < count[:, None]
        verts = np.where(valid[..., None], offsets + self.center[index, None, :2], 0.0)
        return verts, count

    def areas(self, index=slice(None)) -> np.ndarray:
        """Cell areas (cm^2) from the stored polygons."""
        from hgcal_jax.geometry import polygons

        return polygons.polygon_area(self.vertex_offset[index], self.n_vertices[index])

    def layers(self) -> np.ndarray:
        return np.unique(self.layer)

    def zsides(self) -> np.ndarray:
        return np.unique(self.zside)

    def select(self, mask: np.ndarray) -> Geometry:
        """The sub-geometry of the cells where `mask` (bool or index array) holds."""
        arrays = {name: getattr(self, name)[mask] for name in FIELDS}
        return Geometry(**arrays, source=self.source, params=dict(self.params))

    def layer_z(self) -> dict[tuple[int, int], float]:
        """Mean cell z per (zside, layer)."""
        pairs, inverse = np.unique(
            np.stack([self.zside, self.layer], axis=1), axis=0, return_inverse=True
        )
        inverse = inverse.ravel()
        mean_z = np.bincount(inverse, weights=self.z) / np.bincount(inverse)
        return {(int(s), int(lay)): float(z) for (s, lay), z in zip(pairs, mean_z, strict=True)}

    @functools.cached_property
    def _id_order(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.id, kind="stable")
        return order, self.id[order]

    def index_of(self, ids: np.ndarray) -> np.ndarray:
        """Row index of each cell id, or -1 where the id is not in the geometry."""
        order, sorted_ids = self._id_order  # sorted once per geometry, then binary searches
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(sorted_ids) - 1, 0))
        found = len(sorted_ids) > 0
        hit = found & (sorted_ids[pos] == ids) if found else np.zeros(ids.shape, bool)
        return np.where(hit, order[pos], -1)
