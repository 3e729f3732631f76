"""`InterpolationTable`: for every cell, up to K pixels and their exact area weights.

Row c holds the global pixel columns `ix[c]`, rows `iy[c]` and weights
`weight[c] = area(cell ∩ pixel) / area(cell)`; unused slots have weight 0. A cell's weights sum to
the fraction of the cell inside the grid (1 for the full grid), so interpolation conserves energy.
The table depends only on each cell's (layer, polygon), so the two endcaps' mirror-twin cells get
identical rows. Tables are cached as `.npz` keyed by the geometry's content hash and the grid; a
cached table whose hash, grid or format differs is rebuilt, never reused.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import tqdm

from hgcal_jax.geometry import io as geometry_io
from hgcal_jax.geometry import types
from hgcal_jax.interpolation import overlap
from hgcal_jax.interpolation.grid import Grid

FORMAT_VERSION = 1
_ARRAYS = ("ix", "iy", "weight", "layer_index", "center_xy", "cell_area")


class TableMismatchError(ValueError):
    """A table was built for another geometry or grid."""


@dataclasses.dataclass(frozen=True, eq=False)
class InterpolationTable:
    grid: Grid
    geometry_hash: str
    ix: np.ndarray  # (C, K) int16 global pixel column
    iy: np.ndarray  # (C, K) int16 global pixel row
    weight: np.ndarray  # (C, K) float32 overlap / cell area; 0 in unused slots
    layer_index: np.ndarray  # (C,) int16 image channel of the cell's layer
    center_xy: np.ndarray  # (C, 2) float32 cell centre (cm), for window centroids
    cell_area: np.ndarray  # (C,) float64 cell area (cm^2)

    @property
    def k(self) -> int:
        return self.weight.shape[1]

    def __len__(self) -> int:
        return len(self.layer_index)

    def check(self, geometry_hash: str, what: str = "the geometry") -> None:
        """Raises TableMismatchError unless the table was built for `geometry_hash`."""
        if geometry_hash != self.geometry_hash:
            raise TableMismatchError(
                f"interpolation table was built for geometry {self.geometry_hash}, but {what} "
                f"has hash {geometry_hash}; rebuild the table (delete the cache)"
            )


def cell_extents(geometry: types.Geometry, index=slice(None)) -> tuple[np.ndarray, np.ndarray]:
    """Lower-left and upper-right vertex offsets `(N, 2)` from each selected cell's centre."""
    offsets, count = geometry.vertex_offset[index], geometry.n_vertices[index]
    valid = (np.arange(types.MAX_VERTICES)[None, :] < count[:, None])[..., None]
    lo = np.min(np.where(valid, offsets, np.float32(np.inf)), axis=1)
    hi = np.max(np.where(valid, offsets, np.float32(-np.inf)), axis=1)
    return lo, hi


def chunks(n: int, size: int) -> list[slice]:
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def build(geometry: types.Geometry, grid: Grid, chunk: int = 32768, workers: int | None = None,
          progress: bool = False) -> InterpolationTable:
    """Exact overlap table of every cell of `geometry` on `grid`.

    Vectorised over chunks of cells; chunks run on a thread pool (numpy releases the GIL in its
    array loops, so threads use every core without copying the geometry to processes).
    """
    p = grid.pixel_cm
    # Columns and rows a cell can span: its widest extent in pixels, plus one for the phase.
    # 2 x max |offset| bounds the width of every cell, cheaply and without temporaries.
    reach = float(np.max(np.abs(geometry.vertex_offset)))
    kc = kr = int(math.ceil(2 * reach / p)) + 1
    n = len(geometry)
    ix = np.zeros((n, kr * kc), np.int16)
    iy = np.zeros((n, kr * kc), np.int16)
    weight = np.zeros((n, kr * kc), np.float32)
    cell_area = np.zeros(n)

    def run(sl: slice) -> int:
        cx, cy = geometry.center[sl, 0], geometry.center[sl, 1]
        m = len(cx)
        lo, _ = cell_extents(geometry, sl)
        # First pixel column/row touched, from the absolute lower-left corner of the cell.
        i0 = np.floor((cx + lo[:, 0] - grid.x0) / p).astype(np.int64)
        j0 = np.floor((cy + lo[:, 1] - grid.y0) / p).astype(np.int64)
        # Pixel boundaries relative to the cell centre (where the polygon offsets live).
        cols = grid.x0 + (i0[:, None] + np.arange(kc + 1)) * p - cx[:, None]
        rows = grid.y0 + (j0[:, None] + np.arange(kr + 1)) * p - cy[:, None]
        area = overlap.pixel_overlaps(geometry.vertex_offset[sl], geometry.n_vertices[sl], cols, rows)
        pix_i = np.broadcast_to(i0[:, None, None] + np.arange(kc), (m, kr, kc)).reshape(m, -1)
        pix_j = np.broadcast_to(j0[:, None, None] + np.arange(kr)[:, None], (m, kr, kc)).reshape(m, -1)
        inside = (pix_i >= 0) & (pix_i < grid.nx) & (pix_j >= 0) & (pix_j < grid.ny)
        area = np.where(inside, area.reshape(m, -1), 0.0)
        # Largest weights first, so unused slots collect at the end of every row.
        order = np.argsort(-area, axis=1, kind="stable")
        area = np.take_along_axis(area, order, axis=1)
        used = area > 0
        cell_area[sl] = geometry.areas(sl)
        weight[sl] = area / cell_area[sl, None]
        ix[sl] = np.where(used, np.take_along_axis(pix_i, order, axis=1), 0)
        iy[sl] = np.where(used, np.take_along_axis(pix_j, order, axis=1), 0)
        return m

    workers = workers or os.cpu_count() or 1
    with (concurrent.futures.ThreadPoolExecutor(workers) as pool,
          tqdm.tqdm(total=n, desc="overlap table", unit="cell", unit_scale=True,
                    disable=not progress) as bar):
        for m in pool.map(run, chunks(n, chunk)):
            bar.update(m)
    k = max(int(np.max(np.sum(weight > 0, axis=1))), 1)
    return InterpolationTable(
        grid=grid,
        geometry_hash=geometry_io.content_hash(geometry),
        ix=np.ascontiguousarray(ix[:, :k]),
        iy=np.ascontiguousarray(iy[:, :k]),
        weight=np.ascontiguousarray(weight[:, :k]),
        layer_index=grid.layer_index(geometry.layer).astype(np.int16),
        center_xy=geometry.center[:, :2].astype(np.float32),
        cell_area=cell_area,
    )


def save(table: InterpolationTable, path: str | os.PathLike) -> None:
    """Writes the table atomically as `.npz`."""
    meta = {"format_version": FORMAT_VERSION, "geometry_hash": table.geometry_hash,
            "grid": table.grid.key()}
    arrays = {name: getattr(table, name) for name in _ARRAYS}

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, meta_json=np.array(json.dumps(meta)), **arrays)

    geometry_io.atomic_write(path, write)


def load(path: str | os.PathLike) -> InterpolationTable:
    """Reads a table; raises TableMismatchError naming the file if it is of another format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interpolation table {path} does not exist")
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta_json"]))
        if meta.get("format_version") != FORMAT_VERSION:
            raise TableMismatchError(f"interpolation table {path} has format version "
                                     f"{meta.get('format_version')}, expected {FORMAT_VERSION}")
        grid_spec = json.loads(meta["grid"])
        grid_spec["layers"] = tuple(grid_spec["layers"])
        return InterpolationTable(grid=Grid(**grid_spec), geometry_hash=meta["geometry_hash"],
                                  **{name: npz[name] for name in _ARRAYS})


def cache_path(cache_dir: str | os.PathLike, geometry_hash: str, grid: Grid) -> Path:
    grid_digest = hashlib.blake2b(grid.key().encode(), digest_size=4).hexdigest()
    return Path(cache_dir) / f"interp-{geometry_hash[:16]}-{grid_digest}.npz"


def load_or_build(geometry: types.Geometry, grid: Grid, cache_dir: str | os.PathLike,
                  progress: bool = True) -> InterpolationTable:
    """The cached table for (geometry, grid), rebuilt when missing or stale."""
    digest = geometry_io.content_hash(geometry)
    path = cache_path(cache_dir, digest, grid)
    if path.is_file():
        try:
            table = load(path)
            if table.geometry_hash == digest and table.grid.key() == grid.key():
                return dataclasses.replace(table, grid=grid)
            logging.warning("interpolation cache %s is stale (other geometry or grid): rebuilding", path)
        except (TableMismatchError, KeyError, ValueError, OSError) as e:
            logging.warning("interpolation cache %s is unreadable (%s): rebuilding", path, e)
    start = time.perf_counter()
    table = build(geometry, grid, progress=progress)
    save(table, path)
    logging.info("built interpolation table %s in %.1f s", path, time.perf_counter() - start)
    return table
