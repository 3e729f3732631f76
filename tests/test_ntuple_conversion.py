"""CMSSW ntuple -> event shards: the real 2-event fixture, and small ntuples written with uproot."""

from __future__ import annotations

import json
import subprocess
import sys

import awkward as ak
import numpy as np
import pytest
import uproot

from hgcal_jax.data import ntuple, records, shards, streaming
from hgcal_jax.geometry import io, types
from hgcal_jax.geometry import ntuple as geometry_ntuple
from tests.conftest import REPO, shared_data

REAL_NAME = "hgcal_ntuple_muons_35GeV_2ev.root"
FLT_MAX = np.float32(3.4028235e38)


# ---------------------------------------------------------------- the real fixture

@pytest.fixture(scope="module")
def real_path():
    return shared_data(REAL_NAME)


@pytest.fixture(scope="module")
def real_geometry(real_path) -> types.Geometry:
    return geometry_ntuple.from_ntuple(real_path)


@pytest.fixture(scope="module")
def real_converted(real_path, real_geometry):
    stats = ntuple.ConversionStats()
    events = list(ntuple.convert(real_path, real_geometry, ntuple.Selection(), stats=stats))
    return events, stats


@pytest.fixture(scope="module")
def real_arrays(real_path):
    """The file's branches, read independently of the module under test."""
    with uproot.open(real_path) as f:
        return f["ana/hgc"].arrays(filter_name=["rechit_*", "genpart_*", "vtx_*"])


def _entry_particle(event: records.Event) -> tuple[int, int]:
    return event.event_id // ntuple.PARTICLE_STRIDE, event.event_id % ntuple.PARTICLE_STRIDE


def test_real_records_cover_both_endcaps_with_own_hits(real_converted, real_geometry, real_arrays):
    events, stats = real_converted
    assert len(events) == 4 and stats.records_written == 4 and stats.particles_seen == 4
    assert {e.truth["zside"] for e in events} == {-1, 1}
    for event in events:
        assert np.all(real_geometry.zside[event.cells] == event.truth["zside"])
    scint = ak.to_numpy(ak.flatten(real_arrays["rechit_thickness"])) > 1e3
    assert stats.hits_scintillator == scint.sum() > 0  # both endcaps of both entries are used
    assert stats.hits_unknown == 0 and stats.skipped_empty == 0


def test_real_hits_equal_the_silicon_rechits_of_the_endcap(real_converted, real_arrays):
    for event in real_converted[0]:
        entry, _ = _entry_particle(event)
        z = np.asarray(real_arrays["rechit_z"][entry])
        silicon = np.asarray(real_arrays["rechit_thickness"][entry]) < 1e3
        mine = silicon & (np.sign(z) == event.truth["zside"])
        energies = np.asarray(real_arrays["rechit_energy"][entry])[mine]
        assert len(event.cells) == mine.sum() > 10_000
        np.testing.assert_allclose(event.energies.sum(dtype=np.float64), energies.sum(dtype=np.float64),
                                   rtol=1e-6)
        np.testing.assert_array_equal(np.sort(event.energies), np.sort(energies))


def test_real_truth_matches_genpart(real_converted, real_arrays):
    ref = ntuple.Selection().reference_layer - 1
    for event in real_converted[0]:
        entry, p = _entry_particle(event)
        t, g = event.truth, {k: real_arrays[k][entry] for k in real_arrays.fields}
        assert t["pid"] == g["genpart_pid"][p] and abs(t["pid"]) == 13
        assert t["zside"] == np.sign(g["genpart_eta"][p])
        for name in ("energy", "eta", "phi"):
            assert t[name] == np.float32(g[f"genpart_{name}"][p])
        for c in "xyz":
            assert t[f"impact_{c}"] == np.float32(g[f"genpart_pos{c}"][p][ref])
            assert t[f"front_{c}"] == np.float32(g[f"genpart_pos{c}"][p][0])
            assert t[f"vertex_{c}"] == np.float32(g[f"vtx_{c}"])
        assert abs(t["impact_z"]) > abs(t["front_z"]) > 300
        assert all(np.isnan(t[k]) for k in ("deposited", "upstream_loss", "leakage"))
        assert np.sign(t["barycentre_z"]) == t["zside"]


def test_real_dataset_is_readable_and_rerun_is_skipped(real_path, real_geometry, real_converted, tmp_path):
    meta = ntuple.convert_to_dataset(real_path, real_geometry, ntuple.Selection(), tmp_path)
    digest = io.content_hash(real_geometry)
    read = [e for split in meta["splits"]
            for e in shards.iter_events(shards.open_split(tmp_path, split, digest)[0])]
    by_id = {e.event_id: e for e in real_converted[0]}
    assert sorted(e.event_id for e in read) == sorted(by_id)
    assert all(e == by_id[e.event_id] for e in read)
    on_disk = json.loads((tmp_path / shards.META).read_text())
    assert on_disk == meta
    assert meta["geometry_hash"] == io.content_hash(real_geometry)
    assert (meta["source"], meta["energy_unit"], meta["format"]) == ("ntuple", "GeV", "hgcal_jax.events")
    assert meta["record_version"] == records.RECORD_VERSION
    assert meta["conversion"]["records_written"] == sum(s["events"] for s in meta["splits"].values()) == 4
    assert meta["inputs"] == [str(real_path)]
    stamp = (tmp_path / shards.META).stat().st_mtime_ns
    assert ntuple.convert_to_dataset(real_path, real_geometry, ntuple.Selection(), tmp_path) == meta
    assert (tmp_path / shards.META).stat().st_mtime_ns == stamp
    redone = ntuple.convert_to_dataset(real_path, real_geometry, ntuple.Selection(reference_layer=11),
                                       tmp_path, split_fractions={"train": 1.0, "val": 0.0, "test": 0.0})
    assert redone["selection"]["reference_layer"] == 11 and list(redone["splits"]) == ["train"]
    assert sorted(p.name for p in tmp_path.glob("*.arrayrecord")) == ["train-00000-of-00001.arrayrecord"]
    with pytest.raises(shards.DatasetError, match="'val'"):
        shards.open_split(tmp_path, "val")


def test_real_chunking_does_not_change_the_records(real_path, real_geometry, real_converted):
    one_entry_chunks = list(ntuple.convert(real_path, real_geometry, step_size=1))
    assert one_entry_chunks == real_converted[0]


def test_script_converts_the_real_file(real_path, tmp_path):
    out = tmp_path / "ds"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "convert_ntuple.py"),
                             "--input", str(real_path), "--out", str(out), "--pids", "13,-13"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "4 records" in result.stdout.splitlines()[-1]
    meta = json.loads((out / shards.META).read_text())
    assert meta["geometry_hash"] == io.stored_hash(out / "geometry.npz")


# ---------------------------------------------------------------- small written ntuples

N_CELLS = 10  # ids 1..10 on +z, 11..20 on -z


@pytest.fixture(scope="module")
def small_geometry() -> types.Geometry:
    ids = np.arange(1, 2 * N_CELLS + 1)
    zside = np.where(ids <= N_CELLS, 1, -1)
    center = np.stack([ids * 1.0, np.zeros(len(ids)), zside * 320.0], axis=-1)
    n = len(ids)
    return types.Geometry(id=ids, layer=np.ones(n), zside=zside, center=center,
                          vertex_offset=np.zeros((n, types.MAX_VERTICES, 2)),
                          n_vertices=np.full(n, 6), cell_type=np.zeros(n), wafer=np.zeros(n),
                          wafer_type=np.zeros(n), cell=ids, source="test")


def _particle(eta=2.0, pid=11, gen=0, reached=2, pt=10.0):
    return {"pid": pid, "gen": gen, "reachedEE": reached, "pt": pt, "eta": eta, "phi": 0.5,
            "energy": 50.0}


def _write(path, events, drop=()):
    """A tree ana/hgc with events = [(particles, hits)], hits = (detid, energy, z, thickness).

    uproot cannot write vector<vector<float>> into a TTree, so these files have no genpart_pos*
    (converted with require_positions=False); positions are tested on the real file.
    """
    branches = {}
    for name in _particle():
        branches[f"genpart_{name}"] = ak.Array([[p[name] for p in ps] for ps, _ in events])
    for i, name in enumerate(("detid", "energy", "z", "thickness")):
        dtype = np.uint32 if name == "detid" else np.float32
        branches[f"rechit_{name}"] = ak.values_astype(ak.Array([list(h[i]) for _, h in events]), dtype)
    for name in ("pid", "gen", "reachedEE"):
        branches[f"genpart_{name}"] = ak.values_astype(branches[f"genpart_{name}"], np.int32)
    for c in "xyz":
        branches[f"vtx_{c}"] = np.full(len(events), 0.5)
    branches = {k: v for k, v in branches.items() if k not in drop}
    with uproot.recreate(path) as f:  # mktree: assigning a dict would write an RNTuple
        f.mktree("ana/hgc", {k: v.type.content if isinstance(v, ak.Array) else v.dtype
                             for k, v in branches.items()}).extend(branches)
    return path


def _hits(ids, energy=1.0, scint=()):
    ids = np.asarray(ids)
    thickness = np.where(np.isin(ids, scint), FLT_MAX, 300.0)
    z = np.where((ids > N_CELLS) & (ids <= 2 * N_CELLS), -320.0, 320.0)
    z = np.where(ids > 1000, np.where(ids % 2, 400.0, -400.0), z)  # not in the geometry: odd ids +z
    return ids, np.broadcast_to(np.float32(energy), ids.shape), z, thickness


def _convert(path, geometry, **selection):
    selection.setdefault("require_positions", False)
    stats = ntuple.ConversionStats()
    return list(ntuple.convert(path, geometry, ntuple.Selection(**selection), stats=stats)), stats


def test_missing_and_corrupt_files_are_named(small_geometry, tmp_path):
    with pytest.raises(ntuple.NtupleError, match="nope.root does not exist"):
        _convert(tmp_path / "nope.root", small_geometry)
    (tmp_path / "bad.root").write_bytes(b"this is not a ROOT file" * 10)
    with pytest.raises(ntuple.NtupleError, match="bad.root is not a readable ROOT file"):
        _convert(tmp_path / "bad.root", small_geometry)


def test_missing_branch_is_named(small_geometry, tmp_path):
    path = _write(tmp_path / "nb.root", [([_particle()], _hits([1, 2]))], drop=("rechit_energy",))
    with pytest.raises(ntuple.NtupleError, match=r"nb.root.*\['rechit_energy'\]"):
        _convert(path, small_geometry)
    path = _write(tmp_path / "nr.root", [([_particle()], _hits([1, 2]))], drop=("genpart_reachedEE",))
    with pytest.raises(ntuple.NtupleError, match="genpart_reachedEE"):
        _convert(path, small_geometry)
    assert len(_convert(path, small_geometry, require_reached_ee=False)[0]) == 1
    with pytest.raises(ntuple.NtupleError, match=r"nr.root.*genpart_posx"):
        _convert(path, small_geometry, require_reached_ee=False, require_positions=True)


def test_nan_energy_names_file_and_entry(small_geometry, tmp_path):
    bad = _hits([1, 2, 3])
    bad = (bad[0], np.array([1.0, np.nan, 1.0], np.float32), *bad[2:])
    path = _write(tmp_path / "nan.root", [([_particle()], _hits([1])), ([_particle()], bad)])
    with pytest.raises(ntuple.NtupleError, match=r"nan.root: entry 1, particle 0: .*NaN"):
        _convert(path, small_geometry)


def test_failed_conversion_leaves_no_dataset(small_geometry, tmp_path):
    bad = _hits([1, 2])
    path = _write(tmp_path / "nan.root", [([_particle()], _hits([1]))] * 3
                  + [([_particle()], (bad[0], np.array([np.nan, 1.0], np.float32), *bad[2:]))])
    out = tmp_path / "ds"
    selection = ntuple.Selection(require_positions=False)
    with pytest.raises(ntuple.NtupleError, match="entry 3"):
        ntuple.convert_to_dataset(path, small_geometry, selection, out, events_per_shard=1)
    with pytest.raises(shards.DatasetError, match="incomplete"):
        shards.open_split(out, "train")
    assert not list(out.glob("*.arrayrecord"))  # staged shards stay hidden until the end
    good = _write(tmp_path / "good.root", [([_particle()], _hits([1]))] * 3)
    meta = ntuple.convert_to_dataset(good, small_geometry, selection, out, events_per_shard=1,
                                     split_fractions={"train": 1.0})
    assert meta["splits"]["train"]["events"] == 3 and len(meta["splits"]["train"]["shards"]) == 3
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", *(f"train-0000{i}-of-00003.arrayrecord" for i in range(3))]


def test_particle_without_hits_on_its_endcap_is_a_counted_skip(small_geometry, tmp_path):
    # Entry 0: hits only on +z, one particle per endcap. Entry 1: -z has only scintillator hits.
    path = _write(tmp_path / "empty.root", [([_particle(2.0), _particle(-2.0)], _hits([1, 2, 3])),
                                            ([_particle(-2.0)], _hits([1, 2002], scint=[2002]))])
    events, stats = _convert(path, small_geometry)
    assert [e.event_id for e in events] == [0]
    assert stats.skipped_empty == 2 and stats.particles_selected == 3
    assert stats.hits_scintillator == 1 and stats.hits_unknown == 0


def test_unknown_hits_drop_below_the_fraction_and_raise_above(small_geometry, tmp_path):
    # +z: 8 known cells, 1 unknown silicon id, 1 scintillator tile (neither in the geometry).
    hits = _hits([*range(1, 9), 1001, 1003], scint=[1003])
    path = _write(tmp_path / "unknown.root", [([_particle(2.0)], hits)])
    with pytest.raises(ntuple.NtupleError, match=r"unknown.root: entry 0.*1 of 9 non-scintillator"):
        _convert(path, small_geometry)  # 1/9 > 1 %
    events, stats = _convert(path, small_geometry, max_unknown_fraction=0.2)
    assert len(events[0].cells) == 8 and stats.hits_written == 8
    assert stats.hits_unknown == 1 and stats.hits_scintillator == 1
    assert stats.max_unknown_fraction == pytest.approx(1 / 9)


def test_selection_cuts_and_cutflow(small_geometry, tmp_path):
    particles = [_particle(pid=22), _particle(pid=2212), _particle(gen=-1), _particle(reached=1),
                 _particle(pt=0.5), _particle(eta=3.2), _particle(eta=-1.6)]
    path = _write(tmp_path / "cuts.root", [(particles, _hits([1, 11]))])
    events, stats = _convert(path, small_geometry, min_pt=1.0)
    assert [e.event_id for e in events] == [0, 6]
    assert stats.cutflow == {"pid": 6, "gen": 5, "reached_ee": 4, "pt": 3, "eta": 2}
    assert [e.truth["zside"] for e in events] == [1, -1]
    assert np.all(small_geometry.zside[events[1].cells] == -1)


def test_event_ids_across_files_vertex_and_barycentre(small_geometry, tmp_path):
    first = _write(tmp_path / "a.root", [([_particle()], _hits([1, 2], energy=2.0))])
    hits = _hits([1, 3, 11, 12])
    hits = (hits[0], np.array([1.0, 3.0, -1.0, 2.0], np.float32), *hits[2:])
    second = _write(tmp_path / "b.root", [([_particle()], _hits([1])),
                                          ([_particle(2.0), _particle(-2.0)], hits)])
    events = list(ntuple.convert([first, second], small_geometry,
                                 ntuple.Selection(require_positions=False)))
    assert [e.event_id for e in events] == [0, ntuple.FILE_STRIDE, ntuple.FILE_STRIDE + 100_000,
                                            ntuple.FILE_STRIDE + 100_001]
    t = events[0].truth
    assert (t["vertex_x"], t["barycentre_x"], t["barycentre_z"]) == (0.5, 1.5, 320.0)
    assert np.isnan(t["front_x"]) and np.isnan(t["impact_z"])
    assert events[2].truth["barycentre_x"] == pytest.approx(2.5)  # (1 * 1 + 3 * 3) / 4
    assert events[3].truth["barycentre_x"] == 12.0  # the negative hit has no weight
    assert events[3].energies.tolist() == [-1.0, 2.0]  # ... but is kept


def test_real_positions_of_unfilled_or_absent_layers_are_nan(real_path, real_geometry, real_arrays):
    for layer in (40, 60):  # an FH layer (propagated to 0 or near it), beyond the 52 stored
        events = list(ntuple.convert(real_path, real_geometry, ntuple.Selection(reference_layer=layer)))
        assert len(events) == 4
        assert all(np.isnan(e.truth[f"impact_{c}"]) for e in events for c in "xyz")
        assert all(abs(e.truth["front_z"]) > 300 for e in events)


def test_split_assignment_is_deterministic_and_proportional():
    fractions = streaming.check_fractions(ntuple.DEFAULT_SPLITS)
    ids = range(20_000)
    splits = [streaming.split_of(i, 0, fractions) for i in ids]
    counts = {name: splits.count(name) / len(splits) for name in fractions}
    for name, fraction in fractions.items():
        assert counts[name] == pytest.approx(fraction, abs=0.01)
    assert splits == [streaming.split_of(i, 0, fractions) for i in ids]
    assert splits != [streaming.split_of(i, 1, fractions) for i in ids]
    with pytest.raises(ValueError, match="sum to 1"):
        streaming.check_fractions({"train": 0.5})
