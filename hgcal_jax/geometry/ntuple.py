"""Geometry derived from the cells seen in CMSSW HGCAL analysis ntuples (`ana/hgc`).

No geometry file comes with the ntuples, so each silicon cell that appears in a rechit becomes a
cell: its centre is the rechit position, its shape a regular hexagon whose size and orientation
are measured from the rechits themselves. Noise fills most of the detector, so the cells seen in
a few events already tile it densely enough to measure the lattice.

- Cells: unique `rechit_detid` over all events and files; a detid seen twice must sit at the
  same position (to 1e-3 cm), else the input is inconsistent and we raise.
- Silicon: `rechit_thickness` in {120, 200, 300} um. Scintillator tiles carry FLT_MAX (~3.4e38)
  and are skipped and counted in `params` (their r-phi trapezoids cannot be recovered reliably
  from rechit positions, and `types.Geometry` has no tile cell type).
- Size: 120 um sensors have the small (high-density) cells, 200/300 um the large ones. For each
  class the cell pitch (centre-to-centre distance of neighbours) is the lowest strong peak of the
  nearest-neighbour distances within a (layer, zside); hexagon side = pitch / sqrt(3).
- Orientation: nearest-neighbour directions modulo 60 degrees cluster near 0 (neighbours along
  x: pointy-top hexagons) or near 30 (flat-top); measured per class.
- Half cells (`rechit_isHalf`) are drawn as full hexagons (the ntuple has no cut line) and
  labelled HALF; other cells SMALL (120 um) or LARGE.
- Ids and indices: `id` = rechit_detid; `layer` = rechit_layer (global, 1-based, every silicon
  layer kept, including silicon in the mixed layers); `zside` = sign(z);
  `wafer` = (wafer_u + 128) * 256 + (wafer_v + 128) and `cell` = (cell_u + 128) * 256 +
  (cell_v + 128), both int32; `wafer_type` FINE for 120 um, else COARSE.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path

import awkward as ak
import numpy as np
from scipy import spatial

from hgcal_jax.geometry import io, polygons, rootio, types

log = logging.getLogger(__name__)

TREE = "ana/hgc"
BRANCHES = (
    "rechit_detid", "rechit_x", "rechit_y", "rechit_z", "rechit_layer", "rechit_thickness",
    "rechit_wafer_u", "rechit_wafer_v", "rechit_cell_u", "rechit_cell_v", "rechit_isHalf",
)  # fmt: skip
SILICON_UM = (120.0, 200.0, 300.0)
SMALL_CELL_UM = 120.0
SCINTILLATOR_MIN_UM = 1e30  # tiles carry FLT_MAX as their "thickness"
POSITION_TOL = 1e-3  # cm; float32 positions repeat exactly, real moves are >> this
# Expected pitches (hgcal_facts.md), used only when a class has no neighbouring cells at all.
NOMINAL_PITCH = {"small": 0.806, "large": 1.209}
PEAK_WINDOW = 0.15  # relative half-width of the pitch peak
STRONG_FRACTION = 0.2  # a peak is strong at >= this fraction of the tallest one ...
MIN_PAIRS = 4  # ... and at least this many neighbour distances
# Groups are stacked this far apart in a third coordinate, so one KD-tree query never pairs
# cells of different (layer, zside): far beyond the ~500 cm detector.
GROUP_SEPARATION = 1e4
UV_OFFSET, UV_BASE = 128, 256


def from_ntuple(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    include_scintillator: bool = False,
    tree: str = TREE,
    step_size: str | int = "50 MB",
) -> types.Geometry:
    """Builds the geometry of every silicon cell seen in one or more ntuples.

    Raises:
      GeometryFileError: a file is missing or not ROOT, lacks `tree` or branches, or holds
        inconsistent cells (a detid at two positions, an unknown thickness).
      NotImplementedError: `include_scintillator` (tiles are not modelled, see module doc).
    """
    if include_scintillator:
        raise NotImplementedError(
            "from_ntuple does not model scintillator tiles: their r-phi trapezoid edges cannot "
            "be recovered from rechit positions and types.Geometry has no tile cell type; use "
            "include_scintillator=False (tiles are skipped and counted in params)"
        )
    start = time.perf_counter()
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("from_ntuple needs at least one path")
    cells: dict[str, np.ndarray] | None = None
    scint_ids, n_hits = [], 0
    for path in map(Path, paths):
        file, ttree = rootio.open_tree(path, tree, BRANCHES)
        with file:
            for chunk in ttree.iterate(BRANCHES, step_size=step_size, library="ak"):
                flat = {b: ak.to_numpy(ak.flatten(chunk[b], axis=None)) for b in BRANCHES}
                n_hits += len(flat["rechit_detid"])
                silicon, scint = _split_silicon(flat, path)
                scint_ids.append(np.unique(flat["rechit_detid"][scint]))
                new = _unique_cells({b: v[silicon] for b, v in flat.items()}, path)
                cells = new if cells is None else _unique_cells(_concat(cells, new), path)
    if cells is None or not len(cells["rechit_detid"]):
        raise io.GeometryFileError(f"{[str(p) for p in paths]}: no silicon rechit in '{tree}'")
    n_scint = len(np.unique(np.concatenate(scint_ids)))
    geometry_arrays, lattice = _build(cells, paths)
    params = {
        "paths": [str(p) for p in paths],
        "tree": tree,
        "hits_read": n_hits,
        "silicon_cells": len(cells["rechit_detid"]),
        "skipped_scintillator_cells": n_scint,
        "half_cells": int(np.sum(cells["rechit_isHalf"])),
        **lattice,
        "wafer_packing": f"(wafer_u + {UV_OFFSET}) * {UV_BASE} + (wafer_v + {UV_OFFSET})",
        "cell_packing": f"(cell_u + {UV_OFFSET}) * {UV_BASE} + (cell_v + {UV_OFFSET})",
        "load_s": round(time.perf_counter() - start, 3),
    }
    log.info("ntuple geometry: %d silicon cells, %d scintillator tiles skipped, pitches %s",
             params["silicon_cells"], n_scint, lattice["pitch_cm"])
    return types.Geometry(**geometry_arrays, source="ntuple", params=params)


def measure_lattice(xy_Nx2: np.ndarray, group_N: np.ndarray) -> dict | None:
    """Cell pitch and hexagon orientation from nearest-neighbour vectors within each group.

    Returns None when no strong nearest-neighbour peak exists, else a dict with `pitch` (cm),
    `pairs` (distances in the peak), `orientation_deg` (neighbour direction modulo 60, in
    (-30, 30]), `concentration` (0 = no preferred direction, 1 = perfect lattice) and
    `pointy_top` (neighbours along x).
    """
    if len(xy_Nx2) < 2:
        return None
    _, group_index = np.unique(group_N, return_inverse=True)
    pts = np.column_stack([xy_Nx2, group_index.ravel() * GROUP_SEPARATION])
    dist, idx = spatial.cKDTree(pts).query(pts, k=2)
    # Other-group neighbours (a lone cell) and coincident ids carry no lattice information.
    ok = (dist[:, 1] < GROUP_SEPARATION / 2) & (dist[:, 1] > POSITION_TOL)
    d, vec = dist[ok, 1], xy_Nx2[idx[ok, 1]] - xy_Nx2[ok]
    ds = np.sort(d)
    near = (np.searchsorted(ds, ds * 1.05, side="right")
            - np.searchsorted(ds, ds * 0.95, side="left"))
    strong = near >= max(MIN_PAIRS, STRONG_FRACTION * near.max(initial=0))
    if not np.any(strong):
        return None
    # Start from the lowest strong distance, the first lattice peak (second neighbours come at
    # sqrt(3) x pitch, outside the window), and recentre on the window's median twice.
    pitch = float(ds[np.argmax(strong)])
    for _ in range(2):
        in_peak = np.abs(d / pitch - 1.0) < PEAK_WINDOW
        pitch = float(np.median(d[in_peak]))
    in_peak = np.abs(d / pitch - 1.0) < PEAK_WINDOW
    angle = np.arctan2(vec[in_peak, 1], vec[in_peak, 0])
    # Hexagonal lattices are 60-degree symmetric: average exp(6i theta) to get the rotation.
    mean = np.mean(np.exp(6j * angle))
    orientation = float(np.degrees(np.angle(mean)) / 6.0)
    return {
        "pitch": pitch,
        "pairs": int(np.sum(in_peak)),
        "orientation_deg": round(orientation, 3),
        "concentration": round(float(np.abs(mean)), 4),
        "pointy_top": bool(abs(orientation) < 15.0),
    }


def _split_silicon(flat: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Masks of silicon and scintillator hits; raises on any other thickness."""
    thickness = flat["rechit_thickness"]
    scint = thickness > SCINTILLATOR_MIN_UM
    silicon = np.isin(thickness, SILICON_UM)
    unknown = ~(scint | silicon)
    if np.any(unknown):
        i = int(np.argmax(unknown))
        raise io.GeometryFileError(
            f"{path}: rechit_thickness {thickness[i]} is neither silicon {SILICON_UM} nor "
            f"scintillator, detid {int(flat['rechit_detid'][i])} ({int(unknown.sum())} hits)"
        )
    return silicon, scint


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def _unique_cells(rows: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """One row per detid (sorted); raises if one detid has two positions or two layers."""
    ids = rows["rechit_detid"]
    order = np.argsort(ids, kind="stable")
    rows = {k: v[order] for k, v in rows.items()}
    ids = rows["rechit_detid"]
    first = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
    group = np.cumsum(first) - 1
    first_idx = np.flatnonzero(first)
    pos = np.stack([rows[f"rechit_{c}"].astype(np.float64) for c in "xyz"], axis=-1)
    moved = np.max(np.abs(pos - pos[first_idx][group]), axis=1, initial=0.0)
    relayered = rows["rechit_layer"] != rows["rechit_layer"][first_idx][group]
    bad = (moved > POSITION_TOL) | relayered
    if np.any(bad):
        i = int(np.argmax(bad))
        raise io.GeometryFileError(
            f"{path}: detid {int(ids[i])} appears at two positions or layers "
            f"(moved {moved[i]:.3g} cm, layers {rows['rechit_layer'][first_idx][group][i]} "
            f"and {rows['rechit_layer'][i]})"
        )
    return {k: v[first_idx] for k, v in rows.items()}


def _pack_uv(u: np.ndarray, v: np.ndarray, what: str) -> np.ndarray:
    """(u + 128) * 256 + (v + 128) as int32; raises if u or v is outside [-128, 127]."""
    u, v = u.astype(np.int64), v.astype(np.int64)
    for name, w in (("u", u), ("v", v)):
        if len(w) and (w.min() < -UV_OFFSET or w.max() >= UV_BASE - UV_OFFSET):
            raise ValueError(f"{what}_{name} outside [-128, 127]: {w.min()}..{w.max()}")
    return ((u + UV_OFFSET) * UV_BASE + (v + UV_OFFSET)).astype(np.int32)


def _build(cells: dict[str, np.ndarray], paths: list[Path]):
    """Per-cell arrays of the geometry and the measured lattice parameters."""
    center = np.stack([cells[f"rechit_{c}"].astype(np.float64) for c in "xyz"], axis=-1)
    zside = np.sign(center[:, 2]).astype(np.int64)
    layer = cells["rechit_layer"].astype(np.int64)
    if np.any(zside == 0) or np.any(layer < 1):
        i = int(np.argmax((zside == 0) | (layer < 1)))
        raise io.GeometryFileError(f"{[str(p) for p in paths]}: detid "
                                   f"{int(cells['rechit_detid'][i])} has z = 0 or layer < 1")
    small = cells["rechit_thickness"] == SMALL_CELL_UM
    group = layer * 2 + (zside > 0)
    measured = {name: measure_lattice(center[mask, :2], group[mask]) if np.any(mask) else None
                for name, mask in (("small", small), ("large", ~small))}
    pitch, source, pointy = {}, {}, {}
    for name, other in (("small", "large"), ("large", "small")):
        m = measured[name]
        pitch[name] = m["pitch"] if m else NOMINAL_PITCH[name]
        source[name] = "measured" if m else "nominal (no neighbouring cells)"
        # Without neighbours, borrow the other class's orientation (one lattice convention).
        fallback = measured[other]["pointy_top"] if measured[other] else False
        pointy[name] = m["pointy_top"] if m else fallback
        if m is None and np.any(small if name == "small" else ~small):
            log.warning("no neighbouring %s cells: using the nominal pitch %.3f cm",
                        name, pitch[name])
    offset = np.zeros((len(layer), types.MAX_VERTICES, 2))
    for name, mask in (("small", small), ("large", ~small)):
        side = pitch[name] / polygons.SQRT3
        hexagon, _ = polygons.regular_hexagons(np.zeros((1, 2)), side, pointy_top=pointy[name])
        offset[mask] = hexagon[0]
    half = cells["rechit_isHalf"].astype(bool)
    arrays = {
        "id": cells["rechit_detid"].astype(np.int64),
        "layer": layer,
        "zside": zside,
        "center": center,
        "vertex_offset": offset.astype(np.float32),
        "n_vertices": np.full(len(layer), types.MAX_VERTICES),
        "cell_type": np.where(half, types.HALF, np.where(small, types.SMALL, types.LARGE)),
        "wafer": _pack_uv(cells["rechit_wafer_u"], cells["rechit_wafer_v"], "wafer"),
        "wafer_type": np.where(small, types.FINE, types.COARSE),
        "cell": _pack_uv(cells["rechit_cell_u"], cells["rechit_cell_v"], "cell"),
    }
    lattice = {
        "pitch_cm": {k: round(v, 5) for k, v in pitch.items()},
        "pitch_source": source,
        "cell_side_cm": {k: round(v / polygons.SQRT3, 5) for k, v in pitch.items()},
        "cell_area_cm2": {k: round(float(polygons.hexagon_area(v / polygons.SQRT3)), 5)
                          for k, v in pitch.items()},
        "pointy_top": pointy,
        "lattice": {k: ({kk: vv for kk, vv in m.items() if kk != "pitch"} if m else None)
                    for k, m in measured.items()},
    }
    return arrays, lattice
