"""Geometry derived from HGCAL analysis ntuples: the real 2-event fixture and small written ones."""

from __future__ import annotations

import os
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hgcal_jax.geometry import io, ntuple, polygons, synthetic, types

REAL_NAME = "hgcal_ntuple_muons_35GeV_2ev.root"
SQRT3 = np.sqrt(3.0)


def _shared_data() -> Path:
    env = os.environ.get("HGCAL_SHARED_DATA")
    return Path(env) if env else Path(__file__).parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def real_path() -> Path:
    path = _shared_data() / REAL_NAME
    if not path.is_file():
        pytest.skip(f"real ntuple {path} is absent (set HGCAL_SHARED_DATA to its folder)")
    return path


@pytest.fixture(scope="module")
def real(real_path) -> types.Geometry:
    return ntuple.from_ntuple(real_path)


@pytest.fixture(scope="module")
def real_hits(real_path) -> dict[str, np.ndarray]:
    """The file's rechits, flattened, read independently of the module under test."""
    with uproot.open(real_path) as f:
        arrays = f["ana/hgc"].arrays(["rechit_detid", "rechit_z", "rechit_layer",
                                      "rechit_thickness"])
    return {k: ak.to_numpy(ak.flatten(arrays[k])) for k in arrays.fields}


def test_real_file_has_both_endcaps_and_every_silicon_layer(real, real_hits):
    silicon = real_hits["rechit_thickness"] < 1e3
    for zside in (-1, 1):
        hits = silicon & (np.sign(real_hits["rechit_z"]) == zside)
        expected = set(np.unique(real_hits["rechit_layer"][hits]).tolist())
        assert set(np.unique(real.layer[real.zside == zside]).tolist()) == expected
    assert set(real.zsides()) == {-1, 1}
    assert real.layers().max() > 40  # silicon in the mixed layers is kept
    np.testing.assert_array_equal(np.sort(real.id),
                                  np.unique(real_hits["rechit_detid"][silicon]).astype(np.int64))
    assert np.all(np.sign(real.z) == real.zside)


def test_real_pitches_match_the_8_inch_cells(real):
    pitch = real.params["pitch_cm"]
    assert real.params["pitch_source"] == {"small": "measured", "large": "measured"}
    assert pitch["small"] == pytest.approx(0.806, rel=0.03)
    assert pitch["large"] == pytest.approx(1.209, rel=0.03)


def test_real_cell_areas_follow_the_pitch(real):
    areas = real.areas()
    for cell_type, name in ((types.SMALL, "small"), (types.LARGE, "large")):
        sel = real.cell_type == cell_type
        assert sel.any()
        np.testing.assert_allclose(areas[sel], SQRT3 / 2 * real.params["pitch_cm"][name] ** 2,
                                   rtol=1e-4)
    np.testing.assert_array_equal(real.wafer_type == types.FINE, real.cell_type == types.SMALL)


def test_real_scintillator_tiles_are_skipped_and_counted(real, real_hits):
    tiles = np.unique(real_hits["rechit_detid"][real_hits["rechit_thickness"] > 1e30])
    assert len(tiles) > 0
    assert real.params["skipped_scintillator_cells"] == len(tiles)
    assert not np.any(np.isin(real.id, tiles.astype(np.int64)))


def test_a_list_of_files_merges_repeated_cells(real, real_path):
    twice = ntuple.from_ntuple([real_path, str(real_path)])
    np.testing.assert_array_equal(twice.id, real.id)
    np.testing.assert_array_equal(twice.center, real.center)


def test_measure_lattice_tells_pointy_from_flat():
    g = synthetic.build(synthetic.SyntheticSpec(layers=(1,), zsides=(1,), phi_max_deg=-150))
    large = g.cell_type == types.LARGE  # full cells: centres on the lattice
    xy = g.center[large, :2]
    pointy = ntuple.measure_lattice(xy, g.layer[large])
    assert pointy["pointy_top"] and pointy["concentration"] > 0.99
    assert pointy["pitch"] == pytest.approx(SQRT3 * synthetic.LARGE_CELL_SIDE, rel=1e-9)
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    flat = ntuple.measure_lattice(xy @ np.array([[c, s], [-s, c]]), g.layer[large])
    assert not flat["pointy_top"]
    assert flat["pitch"] == pytest.approx(pointy["pitch"], rel=1e-9)


def _write_ntuple(path: Path, hits: dict[str, np.ndarray], n_events: int = 2, drop=()) -> Path:
    """Writes `hits` (one flat array per branch) as `n_events` identical events of `ana/hgc`."""
    dtypes = {"rechit_detid": np.uint32, "rechit_layer": np.int32, "rechit_isHalf": np.bool_,
              **{f"rechit_{k}_{c}": np.int32 for k in ("wafer", "cell") for c in "uv"}}
    branches = {}
    for name in ntuple.BRANCHES:
        if name in drop:
            continue
        flat = np.tile(np.asarray(hits[name], dtype=dtypes.get(name, np.float32)), n_events)
        branches[name] = ak.unflatten(flat, [len(hits[name])] * n_events)
    with uproot.recreate(path) as f:
        f.mktree("ana/hgc", {k: v.type.content for k, v in branches.items()}).extend(branches)
    return path


def _lattice_hits() -> dict[str, np.ndarray]:
    """Flat-top lattices: 120 um (pitch 0.8) on layer 3 and 300 um (pitch 1.2) on layer 30,
    both endcaps, plus two scintillator tiles."""
    i, j = np.meshgrid(np.arange(-4, 5), np.arange(-4, 5))
    a, b = i.ravel(), j.ravel()
    # Flat-top neighbours sit at 30 + 60k degrees.
    unit = np.stack([a * np.cos(np.pi / 6), a * np.sin(np.pi / 6) + b], axis=-1)
    parts = []
    for layer, pitch, thickness, z in ((3, 0.8, 120.0, 322.0), (30, 1.2, 300.0, 360.0)):
        for zside in (1, -1):
            xy = 60.0 + pitch * unit
            parts.append((xy, np.full(len(a), zside * z), layer, thickness))
    parts.append((np.array([[150.0, 0.0], [0.0, 150.0]]), np.array([450.0, -450.0]), 45, 3.4e38))
    xy = np.concatenate([p[0] for p in parts])
    n = len(xy)
    return {
        "rechit_detid": np.arange(1000, 1000 + n),
        "rechit_x": xy[:, 0], "rechit_y": xy[:, 1],
        "rechit_z": np.concatenate([p[1] for p in parts]),
        "rechit_layer": np.concatenate([np.full(len(p[0]), p[2]) for p in parts]),
        "rechit_thickness": np.concatenate([np.full(len(p[0]), p[3]) for p in parts]),
        "rechit_wafer_u": np.full(n, -3), "rechit_wafer_v": np.full(n, 5),
        "rechit_cell_u": np.arange(n) % 24, "rechit_cell_v": np.full(n, 7),
        "rechit_isHalf": np.arange(n) == 0,
    }


def test_written_lattice_is_measured_exactly(tmp_path):
    hits = _lattice_hits()
    g = ntuple.from_ntuple(_write_ntuple(tmp_path / "lattice.root", hits))
    assert len(g) == len(hits["rechit_detid"]) - 2
    assert g.params["skipped_scintillator_cells"] == 2
    assert g.params["pitch_cm"] == {"small": pytest.approx(0.8, abs=1e-5),
                                    "large": pytest.approx(1.2, abs=1e-5)}
    assert g.params["pointy_top"] == {"small": False, "large": False}
    assert set(g.zsides()) == {-1, 1} and set(g.layers()) == {3, 30}
    assert g.cell_type[g.index_of(np.array([1000]))[0]] == types.HALF
    np.testing.assert_array_equal(g.wafer, (-3 + 128) * 256 + (5 + 128))
    np.testing.assert_array_equal(g.cell % 256, 7 + 128)
    # Flat-top hexagons: a vertex on the +x axis at one side (pitch / sqrt 3).
    side = np.where(g.wafer_type == types.FINE, 0.8, 1.2) / SQRT3
    np.testing.assert_allclose(g.vertex_offset[:, 0, 0], side, rtol=1e-5)
    np.testing.assert_allclose(g.areas(), polygons.hexagon_area(side), rtol=1e-4)


def test_detid_at_two_positions_raises(tmp_path):
    hits = _lattice_hits()
    path = _write_ntuple(tmp_path / "moved.root", hits, n_events=1)
    hits["rechit_x"] = hits["rechit_x"] + np.where(np.arange(len(hits["rechit_x"])) == 5, 0.5, 0)
    moved = _write_ntuple(tmp_path / "moved2.root", hits, n_events=1)
    with pytest.raises(io.GeometryFileError, match="detid 1005 appears at two positions") as err:
        ntuple.from_ntuple([path, moved])
    assert str(moved) in str(err.value)


def test_missing_branch_is_named(tmp_path):
    path = _write_ntuple(tmp_path / "partial.root", _lattice_hits(), drop=("rechit_isHalf",))
    with pytest.raises(io.GeometryFileError, match=r"\['rechit_isHalf'\]") as err:
        ntuple.from_ntuple(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("kind", ["missing", "not_root", "no_tree"])
def test_unreadable_inputs_raise(tmp_path, kind):
    path = tmp_path / f"{kind}.root"
    if kind == "not_root":
        path.write_bytes(b"\x00" * 64)
    elif kind == "no_tree":
        with uproot.recreate(path) as f:
            f.mktree("ana/other", {"a": np.int32}).extend({"a": np.arange(3, dtype=np.int32)})
    with pytest.raises(io.GeometryFileError) as err:
        ntuple.from_ntuple(path)
    assert str(path) in str(err.value)
    if kind == "no_tree":
        assert "ana/hgc" in str(err.value)


def test_scintillator_tiles_are_not_modelled(tmp_path):
    with pytest.raises(NotImplementedError, match="scintillator"):
        ntuple.from_ntuple(tmp_path / "any.root", include_scintillator=True)
