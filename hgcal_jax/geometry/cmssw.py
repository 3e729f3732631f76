"""Geometry from the CMSSW trigger-geometry tester's ROOT file, and the writer of that schema.

The tester (`L1Trigger/L1THGCal/test/HGCalTriggerGeomTester.cc`) dumps every silicon cell of the
2018 geometry to the flat TTree `hgcaltriggergeomtester/TreeCells`, one row per cell:
`id, zside, subdet, layer, wafer, wafertype, cell, x, y, z` (cm), optionally the absolute vertex
coordinates `x1..x6, y1..y6` (cm) and an optional vertex count `nvertices`.

Conventions of this reader (each one a choice the file itself does not settle):
- Both endcaps are read (the 2018 analysis code kept only zside == +1); `zsides` selects.
- subdet 3 (EE, layers 1-28) -> global layers 1-28; 4 (FH, 1-12) -> 29-40
  (`detid.global_layer`); 5 (BH scintillator) is skipped unless `include_bh`, and the number
  skipped is recorded in `params["skipped_bh_cells"]`.
- `wafertype == 1` is fine (small cells); any other value (-1 in CMSSW's
  `HGCalDetId::waferType()`, 0 in some dumps) is coarse.
- The cell centre is the file's x, y, z as written, not recomputed from the vertices: for half
  cells CMSSW's position may differ from the polygon's area centroid that `types.Geometry`
  documents, and we keep the detector's own number.
- Vertices are used only if all of x1..x6, y1..y6 are present. The CMSSW tester itself writes
  only x1..x4, the corners of `HGCalGeometry::getCorners`, which are the cell's bounding square,
  not its hexagon: such files (and files without vertices) get regular pointy-top hexagons of
  the wafer type's cell side, and half cells then cannot be told apart from full ones.
- Vertices repeated consecutively (the tester pads 3-5 vertex half cells by repeating the last
  one) are dropped; clockwise polygons are reversed to counter-clockwise.
- ids are the file's `id`; the tester writes them as signed 32-bit ints, so they are read back
  as unsigned 32-bit values into int64.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import uproot

from hgcal_jax.geometry import detid, io, polygons, rootio, synthetic, types

log = logging.getLogger(__name__)

TREE = "hgcaltriggergeomtester/TreeCells"
REQUIRED = ("id", "zside", "subdet", "layer", "wafer", "wafertype", "cell", "x", "y", "z")
VERTEX_X = tuple(f"x{k}" for k in range(1, types.MAX_VERTICES + 1))
VERTEX_Y = tuple(f"y{k}" for k in range(1, types.MAX_VERTICES + 1))
COUNT_BRANCH = "nvertices"
FINE_WAFERTYPE = 1
# A cell is HALF below this fraction of its wafer type's full hexagon area (halves are 0.5,
# corner thirds 0.33; the float32 file coordinates move full cells by ~1e-4 at most).
HALF_AREA_FRACTION = 0.99
# Vertices closer than this (cm) are one vertex: float32 at |x| ~ 250 cm resolves ~2e-5 cm.
DUPLICATE_TOL = 1e-4
# Valid layer-in-subdetector ranges of the 2018 geometry.
LAYER_RANGE = {detid.EE: (1, 28), detid.FH: (1, 12), detid.BH: (1, 12)}


def read_trigger_geometry(
    path: str | os.PathLike,
    include_bh: bool = False,
    zsides: tuple[int, ...] = (1, -1),
    step_size: str | int = "100 MB",
) -> types.Geometry:
    """Reads the tester's `TreeCells` in chunks of `step_size` into a `types.Geometry`.

    Raises:
      GeometryFileError: the file is missing or not ROOT, the tree or required branches are
        missing, or a row is inconsistent (unknown subdet, z sign against zside, ...).
    """
    start = time.perf_counter()
    if not zsides or not set(zsides) <= {1, -1}:
        raise ValueError(f"zsides must be a non-empty subset of (1, -1), got {zsides}")
    path = Path(path)
    file, tree = rootio.open_tree(path, TREE, REQUIRED)
    keys = set(tree.keys())
    n_vertex_branches = _leading_vertex_branches(keys)
    with_vertices = n_vertex_branches == types.MAX_VERTICES
    if 0 < n_vertex_branches < types.MAX_VERTICES:
        log.warning("%s has only x1..x%d: ignoring them (bounding corners, not the cell polygon)",
                    path, n_vertex_branches)
    branches = list(REQUIRED)
    if with_vertices:
        branches += [*VERTEX_X, *VERTEX_Y] + ([COUNT_BRANCH] if COUNT_BRANCH in keys else [])
    parts, counts = [], {"rows": 0, "skipped_bh_cells": 0, "skipped_other_zside": 0}
    with file:
        for chunk in tree.iterate(branches, step_size=step_size, library="np"):
            part, chunk_counts = _convert_chunk(chunk, path, include_bh, zsides, with_vertices)
            parts.append(part)
            for k, v in chunk_counts.items():
                counts[k] += v
    if not parts or not sum(len(p["id"]) for p in parts):
        raise io.GeometryFileError(f"{path}: no cell left after selecting zsides={zsides}, "
                                   f"include_bh={include_bh} ({counts['rows']} rows)")
    arrays = {name: np.concatenate([p[name] for p in parts]) for name in types.FIELDS}
    if counts["skipped_bh_cells"]:
        log.info("%s: skipped %d BH (scintillator) cells", path, counts["skipped_bh_cells"])
    params = {
        "path": str(path),
        "include_bh": include_bh,
        "zsides": list(zsides),
        "vertices_present": with_vertices,
        "vertex_branches_found": n_vertex_branches,
        **counts,
        "load_s": round(time.perf_counter() - start, 3),
    }
    try:
        return types.Geometry(**arrays, source="cmssw", params=params)
    except ValueError as e:  # e.g. repeated ids
        raise io.GeometryFileError(f"{path}: {e}") from e


def write_trigger_geometry(
    geometry: types.Geometry, path: str | os.PathLike, with_vertices: bool = True
) -> Path:
    """Writes `geometry` into the tester's schema (atomically); returns the path.

    subdet, layer-in-subdetector, wafer and cell come from `detid.decode` when the ids are 2018
    HGCalDetIds consistent with the geometry's columns (synthetic and cmssw geometries);
    otherwise from the columns (global layer -> subdet). Polygons with fewer than 6 vertices
    are padded by repeating their last vertex, as the tester does.
    """
    ids = geometry.id
    if len(ids) and (ids.min() < 0 or ids.max() >= 1 << 32):
        raise ValueError("write_trigger_geometry: ids must fit in 32 unsigned bits")
    fields = _schema_fields(geometry)
    branches = {
        # The tester stores raw ids in an `int`: keep the bit pattern.
        "id": ids.astype(np.uint32).view(np.int32),
        **{k: v.astype(np.int32) for k, v in fields.items()},
        "x": geometry.x.astype(np.float32),
        "y": geometry.y.astype(np.float32),
        "z": geometry.z.astype(np.float32),
    }
    if with_vertices:
        verts, count = geometry.polygons()
        pad = np.minimum(np.arange(types.MAX_VERTICES)[None, :], count[:, None] - 1)
        verts = np.take_along_axis(verts, pad[..., None], axis=1)
        for k in range(types.MAX_VERTICES):
            branches[VERTEX_X[k]] = verts[:, k, 0].astype(np.float32)
            branches[VERTEX_Y[k]] = verts[:, k, 1].astype(np.float32)

    def write(tmp):
        with uproot.recreate(tmp) as f:
            # mktree + extend: uproot 5.7 would write an RNTuple for a plain dict assignment.
            f.mktree(TREE, {k: v.dtype for k, v in branches.items()}).extend(branches)

    return io.atomic_write(path, write)


def _leading_vertex_branches(keys: set[str]) -> int:
    """How many vertex pairs x1/y1, x2/y2, ... are present without a gap."""
    n = 0
    while n < types.MAX_VERTICES and VERTEX_X[n] in keys and VERTEX_Y[n] in keys:
        n += 1
    return n


def _convert_chunk(chunk, path, include_bh, zsides, with_vertices):
    """One chunk of rows -> per-cell arrays of the kept cells, and the skip counts."""
    raw = chunk["id"]
    ids = raw.astype(np.int64)
    if raw.dtype.kind == "i" and raw.dtype.itemsize <= 4:
        ids &= 0xFFFFFFFF  # undo the tester's signed `int` storage
    subdet, zside = chunk["subdet"].astype(np.int64), chunk["zside"].astype(np.int64)
    _check(~np.isin(subdet, list(LAYER_RANGE)), ids, path, "subdet not in {3, 4, 5}", subdet)
    _check(~np.isin(zside, [1, -1]), ids, path, "zside not +-1", zside)
    bh = subdet == detid.BH
    on_side = np.isin(zside, zsides)
    keep = on_side & (include_bh | ~bh)
    counts = {
        "rows": len(ids),
        "skipped_bh_cells": int(np.sum(bh & on_side & ~keep)),
        "skipped_other_zside": int(np.sum(~on_side)),
    }
    ids, subdet, zside = ids[keep], subdet[keep], zside[keep]
    layer = chunk["layer"][keep].astype(np.int64)
    center = np.stack([chunk[k][keep].astype(np.float64) for k in "xyz"], axis=-1)
    _check(np.sign(center[:, 2]) != zside, ids, path, "z sign disagrees with zside", center[:, 2])
    lo = np.select([subdet == s for s in LAYER_RANGE], [r[0] for r in LAYER_RANGE.values()])
    hi = np.select([subdet == s for s in LAYER_RANGE], [r[1] for r in LAYER_RANGE.values()])
    _check((layer < lo) | (layer > hi), ids, path, "layer out of its subdetector's range", layer)
    fine = (chunk["wafertype"][keep] == FINE_WAFERTYPE) & (subdet != detid.BH)
    side = np.where(fine, synthetic.SMALL_CELL_SIDE, synthetic.LARGE_CELL_SIDE)
    if with_vertices:
        verts = np.stack([np.stack([chunk[bx][keep], chunk[by][keep]], axis=-1)
                          for bx, by in zip(VERTEX_X, VERTEX_Y, strict=True)], axis=1)
        offset = verts.astype(np.float64) - center[:, None, :2]
        count = chunk[COUNT_BRANCH][keep] if COUNT_BRANCH in chunk else None
        offset, n_vertices = _clean_polygons(offset, count)
        _check(n_vertices < 3, ids, path, "polygon with < 3 distinct vertices", n_vertices)
        area = polygons.polygon_area(offset, n_vertices)
        is_half = area < HALF_AREA_FRACTION * polygons.hexagon_area(side)
    else:
        _check(subdet == detid.BH, ids, path, "BH tile without vertex branches x1..x6", subdet)
        offset, n_vertices = polygons.regular_hexagons(np.zeros((len(ids), 2)), side)
        is_half = np.zeros(len(ids), bool)
    # BH tiles are neither hexagons nor halves: LARGE/COARSE is the neutral label.
    cell_type = np.where(is_half & (subdet != detid.BH), types.HALF,
                         np.where(fine, types.SMALL, types.LARGE))
    return {
        "id": ids,
        "layer": detid.global_layer(subdet, layer),
        "zside": zside,
        "center": center,
        "vertex_offset": offset.astype(np.float32),
        "n_vertices": n_vertices,
        "cell_type": cell_type,
        "wafer": chunk["wafer"][keep],
        "wafer_type": np.where(fine, types.FINE, types.COARSE),
        "cell": chunk["cell"][keep],
    }, counts


def _clean_polygons(offset_Nx6x2: np.ndarray, count_N: np.ndarray | None):
    """Drops repeated vertices and orders each polygon counter-clockwise.

    A vertex equal to its predecessor (padding), vertices past `count_N` and a last vertex equal
    to the first (an explicitly closed ring) are removed. Returns `(offset_Nx6x2, n_N)` with
    zeros past n.
    """
    n_cells, m = offset_Nx6x2.shape[:2]
    k = np.arange(m)[None, :]
    count = np.full(n_cells, m) if count_N is None else np.clip(count_N.astype(np.int64), 0, m)
    step = np.linalg.norm(offset_Nx6x2 - np.roll(offset_Nx6x2, 1, axis=1), axis=-1)
    drop = (k >= count[:, None]) | ((k >= 1) & (step < DUPLICATE_TOL))
    order = np.argsort(drop, axis=1, kind="stable")  # kept vertices first, in their order
    verts = np.take_along_axis(offset_Nx6x2, order[..., None], axis=1)
    n = np.sum(~drop, axis=1)
    last = np.take_along_axis(verts, np.maximum(n - 1, 0)[:, None, None], axis=1)[:, 0]
    closed = (n > 3) & (np.linalg.norm(last - verts[:, 0], axis=-1) < DUPLICATE_TOL)
    n = n - closed
    area = polygons.polygon_area(verts, n)
    # Reverse the valid prefix of clockwise polygons: index i -> n-1-i.
    rev = np.where((area < 0)[:, None] & (k < n[:, None]), n[:, None] - 1 - k, k)
    verts = np.take_along_axis(verts, rev[..., None], axis=1)
    verts = np.where((k < n[:, None])[..., None], verts, 0.0)
    return verts, n.astype(np.int8)


def _check(bad: np.ndarray, ids: np.ndarray, path: Path, what: str, values: np.ndarray) -> None:
    """Raises GeometryFileError naming the file and the first offending id if any row is bad."""
    if np.any(bad):
        i = int(np.argmax(bad))
        raise io.GeometryFileError(f"{path}: {what} for {int(np.sum(bad))} cell(s), first id "
                                   f"{int(ids[i])} (value {values[i]})")


def _schema_fields(geometry: types.Geometry) -> dict[str, np.ndarray]:
    """zside, subdet, layer-in-subdetector, wafer, wafertype (+1 fine / -1 coarse), cell."""
    d = detid.decode(geometry.id)
    wafertype = np.where(geometry.wafer_type == types.FINE, FINE_WAFERTYPE, -1)
    is_detid = (
        np.all((geometry.id >> 28) == detid.FORWARD)
        and np.array_equal(detid.global_layer(d["subdet"], d["layer"]), geometry.layer)
        and np.array_equal(d["zside"], geometry.zside)
        and np.array_equal(d["wafer"], geometry.wafer)
        and np.array_equal(d["cell"], geometry.cell)
    )
    if is_detid:
        subdet, layer = d["subdet"], d["layer"]
    else:  # not 2018 HGCalDetIds (e.g. an ntuple geometry): derive from the global layer
        layer_g = geometry.layer.astype(np.int64)
        subdet = np.select([layer_g <= detid.N_EE_LAYERS, layer_g <= detid.N_EE_LAYERS + 12],
                           [detid.EE, detid.FH], detid.BH)
        layer = layer_g - np.select([subdet == detid.EE, subdet == detid.FH],
                                    [0, detid.N_EE_LAYERS], detid.N_EE_LAYERS + 12)
    return {"zside": geometry.zside, "subdet": subdet, "layer": layer, "wafer": geometry.wafer,
            "wafertype": wafertype, "cell": geometry.cell}
