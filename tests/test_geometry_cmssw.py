"""The CMSSW trigger-geometry tester reader, on files written from a small synthetic geometry."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from hgcal_jax.geometry import cmssw, detid, io, polygons, synthetic, types

VERTEX_BRANCHES = [*cmssw.VERTEX_X, *cmssw.VERTEX_Y]


@pytest.fixture(scope="module")
def geometry() -> types.Geometry:
    # One EE and one FH layer, a 30-degree sector, both endcaps: ~33k cells incl. half cells.
    return synthetic.build(synthetic.SyntheticSpec(layers=(1, 29), phi_min_deg=0, phi_max_deg=30))


@pytest.fixture(scope="module")
def tester_file(geometry, tmp_path_factory):
    return cmssw.write_trigger_geometry(geometry, tmp_path_factory.mktemp("cmssw") / "geom.root")


def _branches(path) -> dict[str, np.ndarray]:
    with uproot.open(path) as f:
        return f[cmssw.TREE].arrays(library="np")


def _write(path, branches: dict[str, np.ndarray], tree: str = cmssw.TREE):
    with uproot.recreate(path) as f:
        f.mktree(tree, {k: v.dtype for k, v in branches.items()}).extend(branches)
    return path


def test_round_trip_keeps_every_cell(geometry, tester_file):
    read = cmssw.read_trigger_geometry(tester_file, step_size=5000)  # several chunks
    assert read.source == "cmssw"
    assert len(read) == len(geometry)
    for name in ("id", "layer", "zside", "cell_type", "n_vertices", "wafer", "wafer_type", "cell"):
        np.testing.assert_array_equal(getattr(read, name), getattr(geometry, name), err_msg=name)
    # The file stores float32 absolute coordinates: ~1e-5 cm at r ~ 150 cm.
    np.testing.assert_allclose(read.center, geometry.center, atol=2e-5)
    np.testing.assert_allclose(read.areas(), geometry.areas(), rtol=1e-4)
    np.testing.assert_allclose(read.vertex_offset, geometry.vertex_offset, atol=5e-5)
    assert np.all(read.areas() > 0)  # counter-clockwise
    assert read.params["path"] == str(tester_file)
    assert read.params["vertices_present"] is True
    assert read.params["skipped_bh_cells"] == 0
    assert set(read.zsides()) == {-1, 1}


def test_file_holds_cmssw_fields(geometry, tester_file):
    raw = _branches(tester_file)
    assert raw["id"].dtype == np.int32  # the tester's `int`
    d = detid.decode(geometry.id)
    np.testing.assert_array_equal(raw["subdet"], d["subdet"])
    np.testing.assert_array_equal(raw["layer"], d["layer"])
    np.testing.assert_array_equal(raw["wafertype"], np.where(d["wafer_type"] == 1, 1, -1))
    # Half cells are padded to six vertices by repeating the last one.
    half = geometry.n_vertices < 6
    np.testing.assert_array_equal(raw["x6"][half], raw["x5"][half])


def test_fh_layer_maps_to_global_29(tester_file):
    raw = _branches(tester_file)
    fh = raw["subdet"] == detid.FH
    assert fh.any() and set(raw["layer"][fh]) == {1}
    read = cmssw.read_trigger_geometry(tester_file)
    rows = read.index_of(raw["id"][fh].astype(np.int64))
    assert np.all(rows >= 0)
    assert set(read.layer[rows]) == {29}
    assert set(read.layers()) == {1, 29}


def test_bh_rows_skipped_unless_asked(tester_file, tmp_path):
    raw = _branches(tester_file)
    fh = np.flatnonzero(raw["subdet"] == detid.FH)[:50]
    bh = {k: v[fh].copy() for k, v in raw.items()}
    bh["subdet"][:] = detid.BH
    bh["layer"][:] = 3
    bh["id"] = detid.encode(detid.BH, bh["zside"], 3, 0, bh["wafer"], bh["cell"]).astype(np.int32)
    path = _write(tmp_path / "with_bh.root", {k: np.concatenate([raw[k], bh[k]]) for k in raw})

    default = cmssw.read_trigger_geometry(path)
    assert len(default) == len(raw["id"])
    assert default.params["skipped_bh_cells"] == 50
    assert not np.any(np.isin(default.id, bh["id"]))

    with_bh = cmssw.read_trigger_geometry(path, include_bh=True)
    assert len(with_bh) == len(raw["id"]) + 50
    assert with_bh.params["skipped_bh_cells"] == 0
    rows = with_bh.index_of(bh["id"].astype(np.int64))
    assert np.all(with_bh.layer[rows] == 40 + 3)


def test_without_vertices_gives_regular_hexagons(tester_file, tmp_path):
    raw = _branches(tester_file)
    path = _write(tmp_path / "no_vertices.root",
                  {k: v for k, v in raw.items() if k not in VERTEX_BRANCHES})
    read = cmssw.read_trigger_geometry(path)
    assert read.params["vertices_present"] is False
    assert np.all(read.n_vertices == 6)
    fine = read.wafer_type == types.FINE
    assert fine.any() and (~fine).any()
    side = np.where(fine, synthetic.SMALL_CELL_SIDE, synthetic.LARGE_CELL_SIDE)
    np.testing.assert_allclose(read.areas(), polygons.hexagon_area(side), rtol=1e-6)
    np.testing.assert_array_equal(read.cell_type, np.where(fine, types.SMALL, types.LARGE))
    # Pointy-top: a vertex straight above the centre.
    np.testing.assert_allclose(read.vertex_offset[:, 0], np.stack([0 * side, side], -1), atol=1e-6)


def test_four_corner_files_are_not_taken_as_polygons(tester_file, tmp_path):
    # The real tester writes x1..x4 (a bounding square): they must not become the cell shape.
    raw = _branches(tester_file)
    drop = {"x5", "x6", "y5", "y6"}
    path = _write(tmp_path / "four.root", {k: v for k, v in raw.items() if k not in drop})
    read = cmssw.read_trigger_geometry(path)
    assert read.params["vertex_branches_found"] == 4
    assert read.params["vertices_present"] is False
    assert np.all(read.n_vertices == 6)


def test_clockwise_polygons_are_reordered(geometry, tester_file, tmp_path):
    raw = _branches(tester_file)
    flipped = dict(raw)
    for k in range(6):  # reverse the ring: x1 <- x6, ...; the padding moves to the front
        flipped[f"x{k + 1}"], flipped[f"y{k + 1}"] = raw[f"x{6 - k}"], raw[f"y{6 - k}"]
    read = cmssw.read_trigger_geometry(_write(tmp_path / "cw.root", flipped))
    np.testing.assert_array_equal(read.n_vertices, geometry.n_vertices)
    np.testing.assert_allclose(read.areas(), geometry.areas(), rtol=1e-4)


def test_zsides_selects_an_endcap(geometry, tester_file):
    read = cmssw.read_trigger_geometry(tester_file, zsides=(-1,))
    assert set(read.zsides()) == {-1}
    assert len(read) == np.sum(geometry.zside == -1)
    assert read.params["skipped_other_zside"] == np.sum(geometry.zside == 1)
    assert np.all(read.z < 0)


def test_z_sign_against_zside_names_file_and_id(tester_file, tmp_path):
    raw = _branches(tester_file)
    raw["z"] = raw["z"].copy()
    raw["z"][7] *= -1
    path = _write(tmp_path / "bad_z.root", raw)
    bad_id = int(raw["id"][7]) & 0xFFFFFFFF
    with pytest.raises(io.GeometryFileError, match=r"z sign") as err:
        cmssw.read_trigger_geometry(path)
    assert str(path) in str(err.value) and str(bad_id) in str(err.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.root"
    with pytest.raises(io.GeometryFileError, match="does not exist") as err:
        cmssw.read_trigger_geometry(path)
    assert str(path) in str(err.value)


def test_not_a_root_file(tmp_path):
    path = tmp_path / "text.root"
    path.write_text("id,x,y\n1,2,3\n")
    with pytest.raises(io.GeometryFileError, match="not a readable ROOT file") as err:
        cmssw.read_trigger_geometry(path)
    assert str(path) in str(err.value)


def test_missing_tree(tmp_path):
    path = _write(tmp_path / "other.root", {"id": np.arange(3, dtype=np.int32)}, tree="other/Tree")
    with pytest.raises(io.GeometryFileError, match="no tree") as err:
        cmssw.read_trigger_geometry(path)
    assert str(path) in str(err.value) and cmssw.TREE in str(err.value)


def test_missing_branches_are_listed(tester_file, tmp_path):
    raw = _branches(tester_file)
    path = _write(tmp_path / "partial.root",
                  {k: v for k, v in raw.items() if k not in ("wafertype", "z")})
    with pytest.raises(io.GeometryFileError, match=r"\['wafertype', 'z'\]") as err:
        cmssw.read_trigger_geometry(path)
    assert str(path) in str(err.value)
