"""Geometry npz io: lossless round trip, stable hash, clear errors on bad files."""

import numpy as np
import pytest

from hgcal_jax.geometry import io, synthetic, types


def test_round_trip_is_lossless_and_hash_stable(tiny_geometry, tmp_path):
    digest = io.save(tiny_geometry, tmp_path / "g.npz")
    loaded = io.load(tmp_path / "g.npz")
    for name in types.FIELDS:
        a, b = getattr(tiny_geometry, name), getattr(loaded, name)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert loaded.source == tiny_geometry.source
    assert loaded.params == tiny_geometry.params
    assert io.content_hash(loaded) == digest == io.stored_hash(tmp_path / "g.npz")
    rebuilt = synthetic.build(synthetic.SyntheticSpec(**{
        k: tuple(v) if isinstance(v, list) else v
        for k, v in tiny_geometry.params.items() if k != "build_s"}))
    assert io.content_hash(rebuilt) == digest


def test_hash_changes_with_content(tiny_geometry):
    moved = tiny_geometry.select(np.arange(len(tiny_geometry)))
    moved.center[0, 0] += 1e-9
    assert io.content_hash(moved) != io.content_hash(tiny_geometry)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(io.GeometryFileError, match="nope.npz does not exist"):
        io.load(tmp_path / "nope.npz")


def test_not_an_npz_is_named(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(io.GeometryFileError, match="junk.npz is not a readable"):
        io.load(path)


def test_other_format_version_is_refused(tiny_geometry, tmp_path):
    io.save(tiny_geometry, tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as npz:
        arrays = dict(npz)
    arrays["format_version"] = np.array(io.FORMAT_VERSION + 1)
    np.savez(tmp_path / "old.npz", **arrays)
    with pytest.raises(io.GeometryFileError, match=r"old.npz has format version 2"):
        io.load(tmp_path / "old.npz")


def test_missing_array_and_corruption_are_detected(tiny_geometry, tmp_path):
    io.save(tiny_geometry, tmp_path / "g.npz")
    with np.load(tmp_path / "g.npz") as npz:
        arrays = dict(npz)
    arrays["center"][3, 1] += 0.5
    np.savez(tmp_path / "corrupt.npz", **arrays)
    with pytest.raises(io.GeometryFileError, match="corrupt.npz is corrupt"):
        io.load(tmp_path / "corrupt.npz")
    del arrays["wafer"]
    np.savez(tmp_path / "partial.npz", **arrays)
    with pytest.raises(io.GeometryFileError, match=r"partial.npz lacks the arrays \['wafer'\]"):
        io.load(tmp_path / "partial.npz")


def test_save_is_atomic(tiny_geometry, tmp_path, monkeypatch):
    path = tmp_path / "g.npz"
    io.save(tiny_geometry, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        io.save(tiny_geometry.select(np.arange(10)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["g.npz"]  # no temp file left
