"""Interpolation: exact overlaps, conservation, barycentres, endcap twins, windows, compile-once."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import shapely

from hgcal_jax import interpolation, targets
from hgcal_jax.geometry import io, polygons, synthetic, types
from hgcal_jax.interpolation import operator, table, testing


@pytest.fixture(scope="module")
def geometry():
    """First and last layer of both endcaps, full phi: every cell type and the full extent."""
    return synthetic.build(synthetic.SyntheticSpec(layers=(1, 2, 40)))


@pytest.fixture(scope="module")
def full_table(geometry):
    return table.build(geometry, interpolation.Grid.full(geometry))


def pixel_box(grid, i, j):
    x, y = grid.x0 + i * grid.pixel_cm, grid.y0 + j * grid.pixel_cm
    return shapely.box(x, y, x + grid.pixel_cm, y + grid.pixel_cm)


def test_overlaps_match_shapely(geometry, full_table):
    rng = np.random.default_rng(0)
    half = np.flatnonzero(geometry.cell_type == types.HALF)
    picks = np.concatenate([rng.choice(len(geometry), 900, replace=False), rng.choice(half, 100)])
    verts, count = geometry.polygons(picks)
    grid = full_table.grid
    worst = 0.0
    for row, c in enumerate(picks):
        cell = shapely.Polygon(verts[row, : count[row]])
        used = full_table.weight[c] > 0
        ours = full_table.weight[c][used].astype(np.float64) * full_table.cell_area[c]
        ref = [cell.intersection(pixel_box(grid, i, j)).area
               for i, j in zip(full_table.ix[c][used], full_table.iy[c][used], strict=True)]
        # float32 weights carry 6e-8 relative; check the exact float64 areas through the sum too.
        worst = max(worst, float(np.max(np.abs(ours - ref) / np.maximum(ref, 1e-300) * np.array(ref))))
        assert abs(sum(ref) - cell.area) < 1e-9  # no pixel with overlap was left out
    assert worst < 1e-7 * 1.3  # float32 weight storage: relative 6e-8 of areas <= 1.3 cm^2


def test_exact_float64_overlaps_match_shapely(geometry):
    """The float64 areas, before float32 storage, agree with shapely to 1e-9 cm^2."""
    from hgcal_jax.interpolation import overlap

    rng = np.random.default_rng(1)
    picks = rng.choice(len(geometry), 1000, replace=False)
    grid = interpolation.Grid.full(geometry)
    verts, count = geometry.polygons(picks)
    offsets = geometry.vertex_offset[picks].astype(np.float64)
    cx, cy = geometry.x[picks], geometry.y[picks]
    i0 = np.floor((verts[..., 0].min(1) - grid.x0) / grid.pixel_cm).astype(int) - 1
    j0 = np.floor((np.where(np.arange(6) < count[:, None], verts[..., 1], np.inf).min(1) - grid.y0)
                  / grid.pixel_cm).astype(int)
    cols = grid.x0 + (i0[:, None] + np.arange(5)) * grid.pixel_cm - cx[:, None]
    rows = grid.y0 + (j0[:, None] + np.arange(4)) * grid.pixel_cm - cy[:, None]
    areas = overlap.pixel_overlaps(offsets, geometry.n_vertices[picks], cols, rows)
    diffs = []
    for n in range(len(picks)):
        cell = shapely.Polygon(verts[n, : count[n]])
        for r in range(3):
            for k in range(4):
                box = shapely.box(cols[n, k] + cx[n], rows[n, r] + cy[n], cols[n, k + 1] + cx[n],
                                  rows[n, r + 1] + cy[n])
                diffs.append(abs(cell.intersection(box).area - areas[n, r, k]))
    assert max(diffs) < 1e-9


def test_surface_per_layer_full_grid(geometry, full_table):
    area = full_table.cell_area
    stored = (full_table.weight.astype(np.float64) * area[:, None]).sum(1)
    for zside in (1, -1):
        for layer in geometry.layers():
            sel = (geometry.layer == layer) & (geometry.zside == zside)
            np.testing.assert_allclose(stored[sel].sum(), area[sel].sum(), rtol=1e-7)


def test_surface_per_layer_partial_grid(geometry):
    """A grid covering part of the detector: weights sum to the fraction inside it."""
    grid = interpolation.Grid(pixel_cm=0.7, nx=150, ny=120, x0=-20.3, y0=10.5, layers=(1, 2, 40))
    tab = table.build(geometry, grid)
    rect = np.array([[grid.x0, grid.y0], [grid.x0 + 105.0, grid.y0],
                     [grid.x0 + 105.0, grid.y0 + 84.0], [grid.x0, grid.y0 + 84.0]])
    verts, count = geometry.polygons()
    clipped, ccount = polygons.clip_to_convex(verts, count, rect)
    inside = polygons.polygon_area(clipped, ccount)  # an independent method: polygon clipping
    stored = (tab.weight.astype(np.float64) * tab.cell_area[:, None]).sum(1)
    for layer in (1, 40):
        sel = geometry.layer == layer
        np.testing.assert_allclose(stored[sel].sum(), inside[sel].sum(), rtol=1e-7)
    assert 0 < (inside > 0).mean() < 0.5


@pytest.fixture(scope="module")
def showers(geometry):
    return testing.ToyShowers(geometry, zside=1)


def test_energy_conservation(full_table, showers):
    cells, energies, mask = showers.batch(np.random.default_rng(2), 4, 512)
    energies[:, ::7] *= -0.05  # negative noise hits are kept, not clipped
    out = operator.interpolate(operator.DeviceTable.from_table(full_table), cells, energies, mask)
    np.testing.assert_allclose(out.image.sum(axis=(1, 2, 3)), (energies * mask).sum(1), rtol=2e-5)
    assert int(out.dropped_hits.sum()) == 0


def _layer_barycentres(image, origin, grid):
    h, w, _ = image.shape
    xs = origin[0] + (np.arange(w) + 0.5) * grid.pixel_cm
    ys = origin[1] + (np.arange(h) + 0.5) * grid.pixel_cm
    e = image.sum((0, 1))
    with np.errstate(invalid="ignore", divide="ignore"):  # empty layers give NaN, compared masked
            return (np.einsum("hwl,w->l", image, xs) / e, np.einsum("hwl,h->l", image, ys) / e)


def _hit_barycentres(geometry, grid, cells, energies, mask):
    layer = grid.layer_index(geometry.layer[cells[mask]])
    e = energies[mask]
    total = np.bincount(layer, e, minlength=grid.n_layers)
    return (np.bincount(layer, e * geometry.x[cells[mask]], minlength=grid.n_layers) / total,
            np.bincount(layer, e * geometry.y[cells[mask]], minlength=grid.n_layers) / total)


def test_barycentres_per_layer(geometry, full_table, showers):
    cells, energies, mask = showers.batch(np.random.default_rng(3), 3, 2048, radius=6.0)
    out = operator.interpolate(operator.DeviceTable.from_table(full_table), cells, energies, mask)
    for b in range(3):
        img_x, img_y = _layer_barycentres(np.asarray(out.image[b], np.float64), out.origin_cm[b],
                                          full_table.grid)
        hit_x, hit_y = _hit_barycentres(geometry, full_table.grid, cells[b], energies[b], mask[b])
        np.testing.assert_allclose(img_x, hit_x, atol=0.05)
        np.testing.assert_allclose(img_y, hit_y, atol=0.05)


def test_minus_z_event_gives_the_image_of_its_plus_z_twin(geometry, full_table, showers):
    cells, energies, mask = showers.batch(np.random.default_rng(4), 2, 1024)
    twin = geometry.index_of(geometry.id[cells] ^ (1 << 24))  # the -z mirror of every +z hit
    assert (geometry.zside[twin] == -1).all() and (twin >= 0).all()
    np.testing.assert_array_equal(geometry.center[twin, 2], -geometry.center[cells, 2])
    for window in (None, 32):
        dev = operator.DeviceTable.from_table(full_table, window=window)
        plus = operator.interpolate(dev, cells, energies, mask)
        minus = operator.interpolate(dev, twin.astype(np.int32), energies, mask)
        np.testing.assert_array_equal(np.asarray(plus.image), np.asarray(minus.image))
        np.testing.assert_array_equal(np.asarray(plus.origin_cm), np.asarray(minus.origin_cm))


def test_truth_reflection_is_an_involution():
    truth = {"eta": np.array([2.0, -2.0]), "phi": np.array([0.3, 0.3]),
             "impact_z": np.array([320.0, -320.0]), "zside": np.array([1, -1])}
    canonical = targets.reflect_to_plus_z(truth, truth["zside"])
    np.testing.assert_array_equal(canonical["eta"], [2.0, 2.0])
    np.testing.assert_array_equal(canonical["impact_z"], [320.0, 320.0])
    np.testing.assert_array_equal(canonical["phi"], truth["phi"])
    np.testing.assert_array_equal(canonical["zside"], [1, 1])
    back = targets.reflect_from_plus_z(canonical, truth["zside"])
    for key in truth:
        np.testing.assert_array_equal(back[key], truth[key])


def test_window_origin_recovers_absolute_barycentre(geometry, full_table, showers):
    cells, energies, mask = showers.batch(np.random.default_rng(5), 4, 1024, radius=4.0)
    full = operator.interpolate(operator.DeviceTable.from_table(full_table), cells, energies, mask)
    win = operator.interpolate(operator.DeviceTable.from_table(full_table, window=32), cells,
                               energies, mask)
    assert win.image.shape == (4, 32, 32, 3)
    grid = full_table.grid
    for b in range(4):
        assert float(win.dropped_energy[b]) == pytest.approx(0.0, abs=1e-4)
        wx, wy = _layer_barycentres(np.asarray(win.image[b], np.float64), win.origin_cm[b], grid)
        fx, fy = _layer_barycentres(np.asarray(full.image[b], np.float64), full.origin_cm[b], grid)
        ok = np.asarray(win.image[b]).sum((0, 1)) > 0
        np.testing.assert_allclose(wx[ok], fx[ok], atol=1e-3)
        np.testing.assert_allclose(wy[ok], fy[ok], atol=1e-3)
        # The origin lies on the full grid's pixel boundaries.
        steps = (np.asarray(win.origin_cm[b]) - [grid.x0, grid.y0]) / grid.pixel_cm
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


def test_window_counts_what_it_drops(full_table, showers):
    cells, energies, mask = showers.batch(np.random.default_rng(6), 2, 2048, radius=8.0)
    win = operator.interpolate(operator.DeviceTable.from_table(full_table, window=8), cells,
                               energies, mask)
    kept = np.asarray(win.image).sum((1, 2, 3))
    np.testing.assert_allclose(kept + np.asarray(win.dropped_energy), (energies * mask).sum(1),
                               rtol=2e-5)
    assert (np.asarray(win.dropped_hits) > 0).all()


def test_operator_is_differentiable_in_energies(full_table, showers):
    cells, energies, mask = showers.batch(np.random.default_rng(7), 2, 256)
    dev = operator.DeviceTable.from_table(full_table)
    weights = jnp.asarray(np.random.default_rng(8).normal(size=full_table.grid.image_shape),
                          jnp.float32)
    f = lambda e: jnp.sum(operator.interpolate(dev, cells, e, mask).image * weights)  # noqa: E731
    grad = jax.grad(f)(jnp.asarray(energies))
    # Linear operator: the gradient of a hit is its pixels' weights dotted with the test weights.
    c = cells[0, 0]
    expected = sum(float(weights[full_table.iy[c, k], full_table.ix[c, k], full_table.layer_index[c]])
                   * float(full_table.weight[c, k]) for k in range(full_table.k))
    assert float(grad[0, 0]) == pytest.approx(expected, rel=1e-4)
    assert float(jnp.abs(grad[~mask]).max(initial=0.0)) == 0.0


def test_compiles_once_per_shape(full_table, showers):
    dev = operator.DeviceTable.from_table(full_table, window=16)

    @chex.assert_max_traces(n=1)
    def images(cells, energies, mask):
        return operator.interpolate(dev, cells, energies, mask).image

    jitted = jax.jit(images)
    rng = np.random.default_rng(9)
    for _ in range(3):
        jitted(*showers.batch(rng, 2, 128))
    chex.clear_trace_counter()


def test_bad_hits_are_named():
    cells = np.array([[0, 5, 2], [1, -1, 999]])
    energies = np.array([[1.0, np.nan, -0.1], [1.0, 1.0, 1.0]])
    mask = np.ones_like(cells, bool)
    with pytest.raises(ValueError, match=r"cell index outside the geometry \(event 11: 2 hits"):
        operator.validate_hits(10, cells, energies, mask, event_ids=[10, 11])
    with pytest.raises(ValueError, match=r"NaN or infinite energy \(event 0: 1 hits"):
        operator.validate_hits(1000, np.abs(cells), energies, mask)
    operator.validate_hits(1000, np.abs(cells), np.nan_to_num(energies), mask)  # negatives are fine


def test_cache_rebuilds_stale_and_refuses_other_geometry(geometry, tmp_path, caplog):
    small = geometry.select(geometry.layer == 1)
    grid = interpolation.Grid.full(small)
    first = table.load_or_build(small, grid, tmp_path, progress=False)
    again = table.load_or_build(small, grid, tmp_path, progress=False)
    np.testing.assert_array_equal(first.weight, again.weight)
    assert len(list(tmp_path.iterdir())) == 1
    # A cache file whose content belongs to another geometry is rebuilt, not reused.
    path = table.cache_path(tmp_path, io.content_hash(small), grid)
    other = small.select(small.zside == 1)
    table.save(table.build(other, grid), path)
    rebuilt = table.load_or_build(small, grid, tmp_path, progress=False)
    assert "stale" in caplog.text
    assert len(rebuilt) == len(small)
    with pytest.raises(table.TableMismatchError, match="built for geometry"):
        rebuilt.check(io.content_hash(other), "the shards' geometry")
