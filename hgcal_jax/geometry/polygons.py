"""Vectorised convex-polygon operations on padded vertex arrays.

A batch of convex polygons is `verts_NxMx2` (float64, counter-clockwise) with `count_N` valid
vertices each; slots past the count are padding. Every function works on the whole batch at once
with numpy, so no per-cell Python loop ever runs: the geometry builds its wafer templates with
`clip_halfplane`, and the interpolation tables clip every cell against pixel squares the same way.

Why not shapely: it is a Python loop over objects (about 10 us a polygon) and the full geometry
has millions of cells; shapely stays a test-only reference.
"""

from __future__ import annotations

import numpy as np

SQRT3 = np.sqrt(3.0)


def regular_hexagons(centers_Nx2: np.ndarray, side: np.ndarray | float, pointy_top: bool = True):
    """Regular hexagons as `(verts_Nx6x2, count_N)`, counter-clockwise.

    Pointy-top hexagons (the CMSSW 2018 convention) have vertices at (0, +-side); flat-top ones
    are rotated by 30 degrees.
    """
    centers_Nx2 = np.asarray(centers_Nx2, dtype=np.float64)
    side_N = np.broadcast_to(np.asarray(side, dtype=np.float64), centers_Nx2.shape[:1])
    start = 90.0 if pointy_top else 0.0
    angles = np.deg2rad(start + 60.0 * np.arange(6))
    unit_6x2 = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    # Snap the trigonometric round-off so that hexagon vertices are exactly symmetric.
    unit_6x2 = np.round(unit_6x2, 15)
    verts = centers_Nx2[:, None, :] + side_N[:, None, None] * unit_6x2[None]
    return verts, np.full(len(centers_Nx2), 6, dtype=np.int8)


def hexagon_area(side: np.ndarray | float) -> np.ndarray:
    """Area of a regular hexagon of the given side: 3 sqrt(3) / 2 side^2."""
    return 1.5 * SQRT3 * np.square(side)


def polygon_area(verts_NxMx2: np.ndarray, count_N: np.ndarray) -> np.ndarray:
    """Signed shoelace area of each padded polygon (positive when counter-clockwise)."""
    verts = np.asarray(verts_NxMx2, dtype=np.float64)
    m = verts.shape[1]
    valid_NxM = np.arange(m)[None, :] < np.asarray(count_N)[:, None]
    # Close every polygon on its own first vertex: the successor of the last valid vertex is 0.
    nxt = np.arange(1, m + 1)[None, :] % np.maximum(np.asarray(count_N), 1)[:, None]
    nxt = np.where(np.arange(m)[None, :] + 1 < np.asarray(count_N)[:, None], nxt, 0)
    x, y = verts[..., 0], verts[..., 1]
    x1 = np.take_along_axis(x, nxt, axis=1)
    y1 = np.take_along_axis(y, nxt, axis=1)
    # Shoelace relative to vertex 0 keeps precision for polygons far from the origin.
    x0, y0 = x[:, :1], y[:, :1]
    cross = (x - x0) * (y1 - y0) - (x1 - x0) * (y - y0)
    return 0.5 * np.sum(np.where(valid_NxM, cross, 0.0), axis=1)


def polygon_centroid(verts_NxMx2: np.ndarray, count_N: np.ndarray) -> np.ndarray:
    """Area centroid `(N, 2)` of each padded polygon (its vertex mean if degenerate)."""
    verts = np.asarray(verts_NxMx2, dtype=np.float64)
    count_N = np.asarray(count_N)
    m = verts.shape[1]
    idx = np.arange(m)[None, :]
    valid = idx < count_N[:, None]
    nxt = np.where(idx + 1 < count_N[:, None], idx + 1, 0)
    origin = verts[:, :1, :]
    p = verts - origin
    q = np.take_along_axis(p, nxt[..., None], axis=1)
    cross = np.where(valid, p[..., 0] * q[..., 1] - q[..., 0] * p[..., 1], 0.0)
    area2 = cross.sum(axis=1)
    cx = np.sum(cross * (p[..., 0] + q[..., 0]), axis=1)
    cy = np.sum(cross * (p[..., 1] + q[..., 1]), axis=1)
    safe = np.where(np.abs(area2) > 0, area2, 1.0)
    centroid = np.stack([cx, cy], axis=-1) / (3.0 * safe[:, None])
    mean = np.sum(np.where(valid[..., None], p, 0.0), axis=1) / np.maximum(count_N, 1)[:, None]
    centroid = np.where((np.abs(area2) > 0)[:, None], centroid, mean)
    return centroid + origin[:, 0, :]


def clip_halfplane(verts_NxMx2, count_N, normal_Nx2, offset_N, eps: float = 1e-12):
    """Clips each convex polygon to the half-plane `normal . p <= offset` (Sutherland-Hodgman).

    Args:
      verts_NxMx2: padded polygons, counter-clockwise.
      count_N: number of valid vertices of each polygon.
      normal_Nx2, offset_N: the half-plane per polygon (broadcastable).
      eps: vertices within eps (cm) outside the line count as on it, so a wafer edge that
        passes through a cell centre gives exactly two halves and no slivers.

    Returns:
      `(verts_Nx(M+1)x2, count_N)`; a polygon entirely outside gets count 0.
    """
    verts = np.asarray(verts_NxMx2, dtype=np.float64)
    count_N = np.asarray(count_N)
    n, m, _ = verts.shape
    normal = np.broadcast_to(np.asarray(normal_Nx2, dtype=np.float64), (n, 2))
    offset = np.broadcast_to(np.asarray(offset_N, dtype=np.float64), (n,))
    idx = np.arange(m)[None, :]
    valid = idx < count_N[:, None]
    nxt = np.where(idx + 1 < count_N[:, None], idx + 1, 0)
    dist = np.einsum("nmk,nk->nm", verts, normal) - offset[:, None]
    dist = np.where(np.abs(dist) <= eps, 0.0, dist)
    inside = (dist <= 0.0) & valid
    dist_next = np.take_along_axis(dist, nxt, axis=1)
    # An edge crossing the line strictly emits its intersection point.
    crosses = valid & (((dist < 0) & (dist_next > 0)) | ((dist > 0) & (dist_next < 0)))
    t = np.where(crosses, dist / np.where(crosses, dist - dist_next, 1.0), 0.0)
    v_next = np.take_along_axis(verts, nxt[..., None], axis=1)
    cut = verts + t[..., None] * (v_next - verts)
    # Each input vertex emits up to two points: itself (if inside) then the crossing (if any).
    emit = np.stack([inside, crosses], axis=2).reshape(n, 2 * m)
    points = np.stack([verts, cut], axis=2).reshape(n, 2 * m, 2)
    order = np.argsort(~emit, axis=1, kind="stable")[:, : m + 1]
    out = np.take_along_axis(points, order[..., None], axis=1)
    new_count = emit.sum(axis=1)
    out = np.where((np.arange(m + 1)[None, :] < new_count[:, None])[..., None], out, 0.0)
    # Degenerate leftovers (a vertex or an edge touching the line) have no area: drop them.
    new_count = np.where(new_count >= 3, new_count, 0)
    return out, new_count.astype(np.int8)


def clip_to_convex(verts_NxMx2, count_N, clip_Kx2: np.ndarray, eps: float = 1e-12):
    """Clips every polygon to one convex, counter-clockwise polygon `clip_Kx2`.

    Returns padded `(verts_Nx(M+K)x2, count_N)`.
    """
    clip = np.asarray(clip_Kx2, dtype=np.float64)
    for a, b in zip(clip, np.roll(clip, -1, axis=0), strict=True):
        edge = b - a
        outward = np.array([edge[1], -edge[0]])  # right-hand normal points out for CCW
        outward /= np.hypot(*outward)
        verts_NxMx2, count_N = clip_halfplane(verts_NxMx2, count_N, outward, outward @ a, eps)
    return verts_NxMx2, count_N


def trim(verts_NxMx2: np.ndarray, count_N: np.ndarray, max_vertices: int):
    """Drops padding columns past `max_vertices`; raises if a polygon needs more."""
    if len(count_N) and int(np.max(count_N)) > max_vertices:
        raise ValueError(f"a polygon has {int(np.max(count_N))} vertices > {max_vertices}")
    return verts_NxMx2[:, :max_vertices], count_N
