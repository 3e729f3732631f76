"""The synthetic v8-like geometry: exact cells, exact tiling, exact endcap mirror."""

import numpy as np
import pytest
import shapely

from hgcal_jax.geometry import detid, polygons, synthetic, types

WAFER_AREA = polygons.hexagon_area(synthetic.WAFER_FLAT_TO_FLAT / np.sqrt(3))


@pytest.mark.parametrize(
    "fine, n_cells, n_half, side",
    [(False, 133, 24, synthetic.LARGE_CELL_SIDE), (True, 240, 30, synthetic.SMALL_CELL_SIDE)],
)
def test_wafer_template_tiles_the_wafer(fine, n_cells, n_half, side):
    verts, count, cell_type = synthetic.wafer_template(fine)
    area = polygons.polygon_area(verts, count)
    assert len(count) == n_cells
    assert int((cell_type == types.HALF).sum()) == n_half
    full = cell_type != types.HALF
    np.testing.assert_allclose(area[full], polygons.hexagon_area(side), rtol=1e-12)
    np.testing.assert_allclose(area.sum(), WAFER_AREA, rtol=1e-12)
    # Tiling also means no overlap: the union has the area of the sum.
    union = shapely.union_all([shapely.Polygon(v[:c]) for v, c in zip(verts, count, strict=True)])
    np.testing.assert_allclose(union.area, area.sum(), rtol=1e-9)


def test_cell_areas_are_exact_hexagons(tiny_geometry):
    g = tiny_geometry
    area = g.areas()
    for cell_type, side in ((types.LARGE, synthetic.LARGE_CELL_SIDE),
                            (types.SMALL, synthetic.SMALL_CELL_SIDE)):
        sel = g.cell_type == cell_type
        assert sel.any()
        np.testing.assert_allclose(area[sel], 1.5 * np.sqrt(3) * side**2, rtol=1e-6)
    assert (area[g.cell_type == types.HALF] < 0.51 * polygons.hexagon_area(synthetic.LARGE_CELL_SIDE)).all()


def test_full_wafers_in_geometry_have_wafer_area(tiny_geometry):
    g = tiny_geometry
    area = g.areas()
    sel = (g.zside == 1) & (g.layer == 1)
    per_wafer = np.bincount(g.wafer[sel], weights=area[sel])
    present = np.unique(g.wafer[sel])
    np.testing.assert_allclose(per_wafer[present], WAFER_AREA, rtol=1e-6)


def test_cells_of_a_layer_do_not_overlap(tiny_geometry):
    g = tiny_geometry
    sel = np.flatnonzero((g.zside == 1) & (g.layer == 29))
    # A fine/coarse boundary and several wafer edges lie in the 30-degree sector.
    assert len(np.unique(g.wafer_type[sel])) == 2
    verts, count = g.polygons(sel)
    shapes = [shapely.Polygon(v[:c]) for v, c in zip(verts, count, strict=True)]
    union = shapely.union_all(shapes)
    np.testing.assert_allclose(union.area, g.areas(sel).sum(), rtol=1e-6)


def test_minus_z_is_the_mirror_of_plus_z(tiny_geometry):
    g = tiny_geometry
    plus, minus = g.select(g.zside == 1), g.select(g.zside == -1)
    assert len(plus) == len(minus) > 0
    key = lambda h: np.lexsort((h.cell, h.wafer, h.layer))  # noqa: E731
    p, m = plus.select(key(plus)), minus.select(key(minus))
    np.testing.assert_array_equal(p.center[:, :2], m.center[:, :2])
    np.testing.assert_array_equal(p.center[:, 2], -m.center[:, 2])
    np.testing.assert_array_equal(p.vertex_offset, m.vertex_offset)
    np.testing.assert_array_equal(p.id ^ m.id, np.full(len(p), 1 << 24))  # only the zside bit


def test_layer_positions_and_eta_coverage(tiny_geometry):
    g = tiny_geometry
    z = g.layer_z()
    assert z[(1, 1)] == pytest.approx(320.755)
    assert z[(-1, 2)] == pytest.approx(-321.505)
    assert z[(1, 29)] == pytest.approx(356.335)
    spec = synthetic.SyntheticSpec()
    wafers = synthetic.wafer_positions()
    for layer in (1, 29):
        sel = (g.layer == layer) & (g.zside == 1)
        wafer_r = np.hypot(*wafers[np.unique(g.wafer[sel])].T)
        z_abs = synthetic.LAYER_Z[layer - 1]
        assert wafer_r.min() > z_abs / np.sinh(spec.eta_max)
        assert wafer_r.max() < z_abs / np.sinh(spec.eta_min)
        fine = g.wafer_type[sel] == types.FINE
        r = np.hypot(g.x[sel], g.y[sel])
        assert r[fine].mean() < r[~fine].mean()


def test_ids_decode_to_the_cell_fields(tiny_geometry):
    g = tiny_geometry
    fields = detid.decode(g.id)
    np.testing.assert_array_equal(detid.global_layer(fields["subdet"], fields["layer"]), g.layer)
    np.testing.assert_array_equal(fields["zside"], g.zside)
    np.testing.assert_array_equal(fields["wafer"], g.wafer)
    np.testing.assert_array_equal(fields["wafer_type"], g.wafer_type)
    np.testing.assert_array_equal(fields["cell"], g.cell)
    np.testing.assert_array_equal(g.index_of(g.id[::7]), np.arange(len(g))[::7])
    assert g.index_of(np.array([12345]))[0] == -1


def test_phi_sector_and_layer_selection():
    g = synthetic.build(synthetic.SyntheticSpec(layers=(3,), zsides=(-1,), phi_min_deg=10,
                                                phi_max_deg=20))
    assert set(g.layers()) == {3} and set(g.zsides()) == {-1}
    wafers = synthetic.wafer_positions()[np.unique(g.wafer)]
    phi = np.degrees(np.arctan2(wafers[:, 1], wafers[:, 0]))
    assert ((phi >= 10) & (phi <= 20)).all()


@pytest.mark.parametrize("bad", [dict(layers=(0,)), dict(layers=(41,)), dict(zsides=(2,)),
                                 dict(phi_min_deg=10, phi_max_deg=5)])
def test_bad_spec_is_an_error(bad):
    with pytest.raises(ValueError):
        synthetic.SyntheticSpec(**bad)


def test_full_detector_has_both_endcaps_and_40_layers():
    g = synthetic.build()
    assert set(g.zsides()) == {1, -1}
    assert list(g.layers()) == list(range(1, 41))
    assert 6_000_000 < len(g) < 9_000_000  # the real v8 silicon has ~6 M channels
    assert len(synthetic.wafer_positions()) < 1 << 10
