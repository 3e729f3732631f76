"""A synthetic 2018-like ("v8") HGCAL silicon geometry: 28 EE + 12 FH layers per endcap.

Construction (all lengths in cm):
- Cells are pointy-top regular hexagons (vertices at (0, +-s), as in the CMSSW 2018 code):
  large cells s = 0.6493 (1.095 cm^2), small cells s = 0.47615 (0.589 cm^2).
- A wafer is a pointy-top hexagon of flat-to-flat width F = 11 large-cell pitches
  = 11 sqrt(3) 0.6493 = 12.37 cm (the CMSSW V8 wafer size, 123.7 mm), which is also exactly
  15 small-cell pitches. The small side is derived from that (F / (15 sqrt 3) = 0.476153, quoted
  as 0.4761), so every wafer edge passes through a row of cell centres: the cells it crosses are
  exact halves (and thirds at the corners), and two neighbouring wafers' halves meet without gaps.
  With the large lattice centred on the wafer centre this gives 133 cells (109 full + 24 partial);
  with the small lattice shifted by one side (a cell vertex at the wafer centre) 240 cells
  (210 + 30): the counts of the real 6-inch wafers. Wafers tile the plane without gaps.
- Per layer, a wafer is kept if its centre lies at eta_min < eta < eta_max at the layer's z
  (1.5 < |eta| < 3.0); fine (small-cell) wafers are those with centre radius < 70 cm.
- z: the CMSSW V8 layer table (hgcal_facts.md); the -z endcap is the mirror: same x, y, -z.

Everything is vectorised: two wafer templates are clipped once, then broadcast over the wafer
centres of each layer.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from hgcal_jax.geometry import detid, polygons, types

SQRT3 = np.sqrt(3.0)
LARGE_CELL_SIDE = 0.6493
WAFER_FLAT_TO_FLAT = 11 * SQRT3 * LARGE_CELL_SIDE
SMALL_CELL_SIDE = WAFER_FLAT_TO_FLAT / (15 * SQRT3)

# CMSSW V7/V8 layer centres (cm), +z endcap.
EE_Z = (
    320.755, 321.505, 322.735, 323.485, 324.715, 325.465, 326.695, 327.445, 328.675, 329.425,
    330.735, 331.605, 332.915, 333.785, 335.095, 335.965, 337.275, 338.145, 339.455, 340.325,
    341.775, 342.845, 344.295, 345.365, 346.815, 347.885, 349.335, 350.405,
)  # fmt: skip
FH_Z = tuple(356.335 + 4.68 * k for k in range(12))
LAYER_Z = EE_Z + FH_Z
N_LAYERS = len(LAYER_Z)
# Wafer positions are numbered out to this radius (cm): beyond the v8 outer edge (191.5 cm at
# layer 40, eta 1.5) and small enough for the 10-bit wafer field of the detid.
WAFER_LATTICE_RADIUS = 200.0


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    """Parameters of the synthetic geometry; defaults give the full 2-endcap v8-like detector."""

    layers: tuple[int, ...] = tuple(range(1, N_LAYERS + 1))
    zsides: tuple[int, ...] = (1, -1)
    phi_min_deg: float = -180.0
    phi_max_deg: float = 180.0
    eta_min: float = 1.5
    eta_max: float = 3.0
    small_cell_radius: float = 70.0

    def __post_init__(self):
        bad = [lay for lay in self.layers if not 1 <= lay <= N_LAYERS]
        if bad or not self.layers:
            raise ValueError(f"layers must be a non-empty subset of 1..{N_LAYERS}, got {bad or '()'}")
        if not set(self.zsides) <= {1, -1} or not self.zsides:
            raise ValueError(f"zsides must be a non-empty subset of (1, -1), got {self.zsides}")
        if not self.phi_min_deg < self.phi_max_deg:
            raise ValueError("phi_min_deg must be below phi_max_deg")
        if not 0 < self.eta_min < self.eta_max:
            raise ValueError("need 0 < eta_min < eta_max")


def wafer_template(fine: bool):
    """Cells of one wafer centred at the origin.

    Returns `(verts_Cx6x2, count_C, cell_type_C)` with cells ordered by (y, x).
    """
    side = SMALL_CELL_SIDE if fine else LARGE_CELL_SIDE
    radius = WAFER_FLAT_TO_FLAT / SQRT3
    n = int(np.ceil(radius / side)) + 2
    i, j = np.meshgrid(np.arange(-2 * n, 2 * n + 1), np.arange(-n, n + 1), indexing="xy")
    x = (i + j / 2.0) * SQRT3 * side
    y = j * 1.5 * side + (side if fine else 0.0)
    near = np.hypot(x, y) < radius + side
    centers = np.stack([x[near], y[near]], axis=-1)
    verts, count = polygons.regular_hexagons(centers, side)
    wafer_verts, _ = polygons.regular_hexagons(np.zeros((1, 2)), radius)
    verts, count = polygons.clip_to_convex(verts, count, wafer_verts[0], eps=1e-9)
    keep = count > 0
    verts, count = polygons.trim(verts[keep], count[keep], types.MAX_VERTICES)
    area = polygons.polygon_area(verts, count)
    full = np.isclose(area, polygons.hexagon_area(side), rtol=1e-9)
    cell_type = np.where(full, types.SMALL if fine else types.LARGE, types.HALF).astype(np.int8)
    centroid = polygons.polygon_centroid(verts, count)
    order = np.lexsort((np.round(centroid[:, 0], 6), np.round(centroid[:, 1], 6)))
    return verts[order], count[order], cell_type[order]


def wafer_positions(r_max: float = WAFER_LATTICE_RADIUS) -> np.ndarray:
    """Centres `(W, 2)` of the wafer lattice out to r_max; the row is the wafer number.

    With the default radius the numbering is the same for every spec (a wafer position has one
    number on every layer and in every sub-geometry), and it fits the 10-bit detid field.
    """
    f = WAFER_FLAT_TO_FLAT
    n = int(np.ceil(r_max / (f * SQRT3 / 2))) + 1
    i, j = np.meshgrid(np.arange(-2 * n, 2 * n + 1), np.arange(-n, n + 1), indexing="xy")
    x = ((i + j / 2.0) * f).ravel()
    y = (j * f * SQRT3 / 2).ravel()
    keep = np.hypot(x, y) <= r_max
    x, y = x[keep], y[keep]
    order = np.lexsort((np.round(x, 6), np.round(y, 6)))
    return np.stack([x[order], y[order]], axis=-1)


def build(spec: SyntheticSpec = SyntheticSpec()) -> types.Geometry:
    """Builds the synthetic geometry for `spec` (the full detector by default)."""
    start = time.perf_counter()
    templates = {fine: wafer_template(fine) for fine in (False, True)}
    r_outer = max(LAYER_Z[lay - 1] for lay in spec.layers) / np.sinh(spec.eta_min)
    if r_outer > WAFER_LATTICE_RADIUS:
        raise ValueError(f"eta_min={spec.eta_min} reaches r={r_outer:.1f} cm, beyond the "
                         f"{WAFER_LATTICE_RADIUS} cm wafer lattice")
    wafers_Wx2 = wafer_positions()
    wafer_r = np.hypot(wafers_Wx2[:, 0], wafers_Wx2[:, 1])
    wafer_phi = np.degrees(np.arctan2(wafers_Wx2[:, 1], wafers_Wx2[:, 0]))
    in_sector = (wafer_phi >= spec.phi_min_deg) & (wafer_phi <= spec.phi_max_deg)
    fine_W = wafer_r < spec.small_cell_radius

    # Two passes: list the (layer, endcap, wafer type) blocks, then fill preallocated arrays, so
    # the full detector never holds a second copy of its cells (peak memory ~ final size).
    blocks = []
    for zside in spec.zsides:
        for layer in sorted(spec.layers):
            z_abs = LAYER_Z[layer - 1]
            r_min, r_max = z_abs / np.sinh(spec.eta_max), z_abs / np.sinh(spec.eta_min)
            on_layer = in_sector & (wafer_r > r_min) & (wafer_r < r_max)
            for fine in (False, True):
                wafer_ids = np.flatnonzero(on_layer & (fine_W == fine))
                if len(wafer_ids):
                    blocks.append((zside, layer, fine, wafer_ids))
    if not blocks:
        raise ValueError(f"the synthetic spec {spec} selects no wafer")
    sizes = [len(w) * len(templates[fine][1]) for _, _, fine, w in blocks]
    total = int(np.sum(sizes))
    arrays = {name: np.empty((total, *shape), dtype) for name, (dtype, shape) in types.FIELDS.items()}
    start_row = 0
    for (zside, layer, fine, wafer_ids), size in zip(blocks, sizes, strict=True):
        out = {name: a[start_row:start_row + size] for name, a in arrays.items()}
        _place(templates[fine], wafers_Wx2, wafer_ids, fine, layer, zside, out)
        start_row += size
    params = dataclasses.asdict(spec)
    params["build_s"] = round(time.perf_counter() - start, 3)
    return types.Geometry(**arrays, source="synthetic", params=params)


def _place(template, wafers_Wx2, wafer_ids, fine, layer, zside, out) -> None:
    """Broadcasts one wafer template over the wafers of one layer and endcap into `out`."""
    verts_Cx6x2, count_C, cell_type_C = template
    n_w, n_c = len(wafer_ids), len(count_C)
    local_center_Cx2 = polygons.polygon_centroid(verts_Cx6x2, count_C)
    offset_Cx6x2 = np.where(
        (np.arange(types.MAX_VERTICES)[None, :] < count_C[:, None])[..., None],
        verts_Cx6x2 - local_center_Cx2[:, None, :],
        0.0,
    )
    center = out["center"].reshape(n_w, n_c, 3)
    center[..., :2] = wafers_Wx2[wafer_ids][:, None, :] + local_center_Cx2[None]
    center[..., 2] = zside * z_abs_of(layer)
    subdet = detid.EE if layer <= detid.N_EE_LAYERS else detid.FH
    layer_in_subdet = layer if subdet == detid.EE else layer - detid.N_EE_LAYERS
    wafer = np.repeat(wafer_ids, n_c)
    cell = np.tile(np.arange(n_c), n_w)
    out["id"][:] = detid.encode(subdet, zside, layer_in_subdet, int(fine), wafer, cell)
    out["layer"][:] = layer
    out["zside"][:] = zside
    out["vertex_offset"].reshape(n_w, n_c, types.MAX_VERTICES, 2)[:] = offset_Cx6x2[None]
    out["n_vertices"].reshape(n_w, n_c)[:] = count_C[None]
    out["cell_type"].reshape(n_w, n_c)[:] = cell_type_C[None]
    out["wafer"][:] = wafer
    out["wafer_type"][:] = int(fine)
    out["cell"][:] = cell


def z_abs_of(layer: int) -> float:
    """|z| (cm) of a global layer's centre."""
    return LAYER_Z[layer - 1]
