"""Shards: atomic writing, resume, meta.json checks, clear errors."""

import json

import numpy as np
import pytest
from array_record.python import array_record_module

from hgcal_jax.data import records, shards


def produce(task):
    rng = np.random.default_rng(task.seed)
    for i in range(task.n_events):
        n = int(rng.integers(1, 40))
        yield records.make_event(rng.choice(5000, n, replace=False), rng.normal(size=n),
                                 {"event_id": task.first_event_id + i, "energy": rng.uniform(10, 100)})


def write(directory, workers=1, meta=None):
    tasks = shards.plan({"train": 25, "val": 6, "test": 5}, 10, seed=1)
    return tasks, shards.write_dataset(directory, tasks, produce, meta or {"geometry_hash": "g1"},
                                       workers=workers, progress=False)


def test_plan_is_deterministic_with_unique_ids():
    tasks = shards.plan({"train": 25, "val": 6}, 10, seed=1)
    assert [t.name for t in tasks] == ["train-00000-of-00003.arrayrecord",
                                       "train-00001-of-00003.arrayrecord",
                                       "train-00002-of-00003.arrayrecord",
                                       "val-00000-of-00001.arrayrecord"]
    assert sum(t.n_events for t in tasks) == 31
    assert [t.first_event_id for t in tasks] == [0, 9, 17, 25]
    assert tasks == shards.plan({"train": 25, "val": 6}, 10, seed=1)
    assert tasks[0].seed != shards.plan({"train": 25, "val": 6}, 10, seed=2)[0].seed


def test_write_and_read_back(tmp_path):
    tasks, meta = write(tmp_path)
    assert meta["splits"]["train"]["events"] == 25
    paths, read_meta = shards.open_split(tmp_path, "train", geometry_hash="g1")
    events = list(shards.iter_events(paths))
    assert [e.event_id for e in events] == list(range(25))
    assert read_meta["target_stats"]["energy"]["std"] > 0
    expected = [e for t in tasks if t.split == "train" for e in produce(t)]
    assert events == expected


def test_parallel_writing_gives_identical_shards(tmp_path):
    write(tmp_path / "one", workers=1)
    write(tmp_path / "two", workers=2)
    for path in sorted((tmp_path / "one").glob("*.arrayrecord")):
        a = list(shards.iter_events([path]))
        b = list(shards.iter_events([tmp_path / "two" / path.name]))
        assert a == b


def test_resume_keeps_complete_shards(tmp_path):
    write(tmp_path)
    victim = tmp_path / "train-00001-of-00003.arrayrecord"
    keep = tmp_path / "train-00000-of-00003.arrayrecord"
    mtime = keep.stat().st_mtime_ns
    victim.unlink()
    (tmp_path / "meta.json").unlink()
    (tmp_path / ".val-00000-of-00001.arrayrecord.tmp-123").write_bytes(b"partial")
    write(tmp_path)
    assert keep.stat().st_mtime_ns == mtime  # not rewritten
    assert victim.is_file()
    assert not list(tmp_path.glob(".*tmp*"))
    assert len(list(shards.iter_events(shards.open_split(tmp_path, "train")[0]))) == 25


def test_resume_with_other_settings_is_refused(tmp_path):
    write(tmp_path)
    with pytest.raises(shards.DatasetError, match="other settings \\(geometry_hash\\)"):
        write(tmp_path, meta={"geometry_hash": "g2"})


def test_missing_meta_is_named(tmp_path):
    write(tmp_path)
    (tmp_path / "meta.json").unlink()
    with pytest.raises(shards.DatasetError, match="has no meta.json"):
        shards.open_split(tmp_path, "train")


def test_geometry_mismatch_is_named(tmp_path):
    write(tmp_path)
    with pytest.raises(shards.DatasetError, match="written for geometry g1, but .* hash g9"):
        shards.open_split(tmp_path, "train", geometry_hash="g9")


def test_truncated_or_replaced_shard_is_refused(tmp_path):
    write(tmp_path)
    path = tmp_path / "val-00000-of-00001.arrayrecord"
    writer = array_record_module.ArrayRecordWriter(str(path), shards.WRITER_OPTIONS)
    writer.write(b"x")
    writer.close()
    with pytest.raises(shards.DatasetError, match="val-00000-of-00001.arrayrecord has 1 records, "
                                                  "meta.json says 6"):
        shards.open_split(tmp_path, "val")


def test_missing_shard_and_split_are_named(tmp_path):
    write(tmp_path)
    (tmp_path / "test-00000-of-00001.arrayrecord").unlink()
    with pytest.raises(shards.DatasetError, match="test-00000-of-00001.arrayrecord listed in meta.json"):
        shards.open_split(tmp_path, "test")
    with pytest.raises(shards.DatasetError, match="no split 'dev'"):
        shards.open_split(tmp_path, "dev")


def test_failing_producer_leaves_no_shard(tmp_path):
    def broken(task):
        yield from produce(task)
        raise RuntimeError("simulator crashed")

    tasks = shards.plan({"train": 5}, 10, seed=0)
    with pytest.raises(RuntimeError, match="simulator crashed"):
        shards.write_dataset(tmp_path, tasks, broken, {}, progress=False)
    assert not list(tmp_path.glob("*.arrayrecord")) and not list(tmp_path.glob(".*tmp*"))
    assert not (tmp_path / "meta.json").exists()


def test_meta_json_is_valid_and_complete(tmp_path):
    write(tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text())
    for key in ("format", "record_version", "writer_options", "splits", "target_stats", "geometry_hash"):
        assert key in meta
    assert meta["record_version"] == records.RECORD_VERSION
