"""Faults and bad input, data and configuration side: every case ends with an error naming the
file, event or key, or with a documented, counted recovery, never with lost or silently wrong data.
docs/reliability.md lists the cases and points at these tests (killed processes:
tests/test_faults_killed.py).
"""

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from hgcal_jax import checkpoint, interpolation, steps, train
from hgcal_jax.data import pipeline, records, shards
from hgcal_jax.geometry import io as geometry_io
from hgcal_jax.geometry import synthetic
from hgcal_jax.interpolation import table as table_lib
from tests.fault_helpers import (
    ENV,
    SHARD,
    TARGETS,
    _committed,
    _data_end,
    edited_dataset,
    leaves,
    train_batches,
)
from tests.train_helpers import REPO, smoke_config

# ----------------------------------------------------------------------------- shard files


@pytest.mark.parametrize("cut", ["empty", "header", "half", "all_but_10"])
def test_truncated_shard_is_refused_naming_the_file(data_dir, tmp_path, cut):
    directory = shutil.copytree(data_dir, tmp_path / "data")
    victim = directory / "train-00001-of-00002.arrayrecord"
    data = victim.read_bytes()
    victim.write_bytes(data[:{"empty": 0, "header": 100, "half": len(data) // 2,
                              "all_but_10": len(data) - 10}[cut]])
    with pytest.raises(shards.DatasetError, match=re.escape(str(victim))):
        shards.open_split(directory, "train")
    shards.open_split(directory, "val")  # the fault stays with its split
    config = smoke_config(directory, tmp_path / "cache")
    with pytest.raises(shards.DatasetError, match=re.escape(str(victim))):
        train.Setup(config)


def test_flipped_bytes_in_a_record_fail_the_read_naming_the_shard(data_dir, tmp_path):
    directory = shutil.copytree(data_dir, tmp_path / "data")
    victim = directory / SHARD
    data = bytearray(victim.read_bytes())
    middle = _data_end(data) // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    victim.write_bytes(bytes(data))
    # The record count lives in the footer, so open_split passes; every read checks the chunk hash.
    paths, meta = shards.open_split(directory, "train")
    with pytest.raises(shards.DatasetError, match=f"{re.escape(str(victim))} is unreadable"):
        list(shards.iter_events(paths))
    with pytest.raises(shards.DatasetError, match=f"{re.escape(str(victim))} record \\d+ is unreadable"):
        train_batches(directory, None)
    spec = pipeline.PipelineSpec(batch_size=8, max_hits=256)
    with pytest.raises(shards.DatasetError, match=f"{re.escape(str(victim))} record \\d+ is unreadable"):
        list(pipeline.eval_dataset(paths, spec, TARGETS, meta["target_stats"]))
    with pytest.raises(shards.DatasetError, match=re.escape(str(victim))):
        train.Setup(smoke_config(directory, tmp_path / "cache"))


def test_random_byte_flips_never_give_silently_different_events(data_dir, tmp_path):
    victim = tmp_path / SHARD
    original = (data_dir / SHARD).read_bytes()
    expected = list(shards.iter_events([data_dir / SHARD]))
    rng = np.random.default_rng(0)
    regions = {"chunks": rng.integers(0, _data_end(original), 30),  # records, headers, hashes
               "anywhere": rng.integers(0, len(original), 30)}     # also padding and footer
    outcomes = {region: {"error": 0, "unchanged": 0} for region in regions}
    for region, positions in regions.items():
        for position in positions:
            data = bytearray(original)
            data[position] ^= 0xFF
            victim.write_bytes(bytes(data))
            try:
                if shards.num_records(victim) != len(expected):  # what open_split checks
                    outcomes[region]["error"] += 1
                    continue
                events = list(shards.iter_events([victim]))
            except (shards.DatasetError, records.RecordError) as e:
                assert victim.name in str(e)
                outcomes[region]["error"] += 1
                continue
            assert events == expected, f"flipping byte {position} changed the events silently"
            outcomes[region]["unchanged"] += 1  # the flip hit Riegeli's zero padding
    assert outcomes["chunks"]["error"] == 30, outcomes  # every flip inside the chunks is caught


def test_dataset_without_meta_json_is_named_incomplete(data_dir, tmp_path):
    directory = shutil.copytree(data_dir, tmp_path / "data")
    (directory / "meta.json").unlink()
    with pytest.raises(shards.DatasetError, match=f"{re.escape(str(directory))} has no meta.json: it is "
                                                  "incomplete"):
        shards.open_split(directory, "train")
    with pytest.raises(shards.DatasetError, match="has no meta.json"):
        train.Setup(smoke_config(directory, tmp_path / "cache"))


def test_geometry_of_other_shards_is_refused_naming_both_hashes(data_dir, tmp_path):
    geometry = geometry_io.load(data_dir / "geometry.npz")
    moved = dataclasses.replace(geometry, center=geometry.center + np.array([0.0, 0.0, 0.01]))
    other = tmp_path / "moved.npz"
    other_hash = geometry_io.save(moved, other)
    config = smoke_config(data_dir, tmp_path / "cache")
    config.data.geometry = str(other)
    meta_hash = shards.read_meta(data_dir)["geometry_hash"]
    with pytest.raises(shards.DatasetError, match=f"meta.json: shards were written for geometry {meta_hash}, "
                                                  f"but the geometry in use has hash {other_hash}"):
        train.Setup(config)


def test_table_of_another_geometry_is_refused_or_rebuilt(tmp_path, caplog):
    spec = synthetic.SyntheticSpec(layers=(1, 2), phi_min_deg=0.0, phi_max_deg=10.0)
    a = synthetic.build(spec)
    b = synthetic.build(dataclasses.replace(spec, layers=(1, 3)))
    grid_a, grid_b = interpolation.Grid.full(a), interpolation.Grid.full(b)
    table_a = interpolation.load_or_build(a, grid_a, tmp_path, progress=False)
    hash_b = geometry_io.content_hash(b)
    with pytest.raises(table_lib.TableMismatchError,
                       match=f"built for geometry {table_a.geometry_hash}, but the shards' geometry "
                             f"has hash {hash_b}"):
        table_a.check(hash_b, "the shards' geometry")
    # A foreign table under B's cache name (copied by hand) is detected and rebuilt, never used.
    planted = table_lib.cache_path(tmp_path, hash_b, grid_b)
    shutil.copy(table_lib.cache_path(tmp_path, table_a.geometry_hash, grid_a), planted)
    table_b = interpolation.load_or_build(b, grid_b, tmp_path, progress=False)
    assert table_b.geometry_hash == hash_b and table_lib.load(planted).geometry_hash == hash_b
    assert any("is stale" in r.getMessage() and str(planted) in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(table_b.weight, interpolation.build(b, grid_b).weight)


# ----------------------------------------------------------------------------- bad records


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_energy_record_is_refused_naming_shard_and_event(data_dir, tmp_path, bad):
    def edit(event):
        if event.event_id != 5:
            return event
        energies = event.energies.copy()
        energies[2] = bad  # records.Event, not make_event (which refuses it): a corrupt writer
        return records.Event(event.cells, energies, event.truth)

    directory = edited_dataset(data_dir, tmp_path / "data", edit)
    message = re.escape(f"{SHARD}[5] (event 5): 1 hits with NaN or infinite energy")
    with pytest.raises(records.RecordError, match=message):
        list(shards.iter_events(shards.open_split(directory, "train")[0]))
    with pytest.raises(records.RecordError, match=message):
        train_batches(directory, None)
    with pytest.raises(records.RecordError, match=message):
        train.Setup(smoke_config(directory, tmp_path / "cache"))


def test_unknown_cell_id_is_refused_naming_shard_and_event(data_dir, tmp_path):
    n_cells = len(geometry_io.load(data_dir / "geometry.npz"))

    def edit(event):
        if event.event_id != 7:
            return event
        # One hit past the last cell: XLA would clamp the gather to the last cell and image it there.
        return records.Event(np.append(event.cells, n_cells + 3).astype(np.int32),
                             np.append(event.energies, 5.0).astype(np.float32), event.truth)

    directory = edited_dataset(data_dir, tmp_path / "data", edit)
    message = re.escape(f"{SHARD}[7] (event 7): 1 hits with cell indices beyond the geometry's "
                        f"{n_cells} cells")
    with pytest.raises(records.RecordError, match=message):
        train_batches(directory, n_cells)
    with pytest.raises(records.RecordError, match=message):
        list(shards.iter_events(shards.open_split(directory, "train")[0], n_cells=n_cells))
    with pytest.raises(records.RecordError, match=message):
        train.Setup(smoke_config(directory, tmp_path / "cache"))


def test_zero_hit_events_and_10x_max_hits_train_finite_and_count_truncation(data_dir, cache_dir, tmp_path):
    max_hits = 5
    directory = edited_dataset(
        data_dir, tmp_path / "data",
        lambda e: records.Event(e.cells[:0], e.energies[:0], e.truth) if e.event_id in (3, 40) else e)
    train_events = list(shards.iter_events(shards.open_split(directory, "train")[0]))
    n_hits = np.array([len(e.cells) for e in train_events])
    assert (n_hits == 0).sum() == 2 and n_hits[n_hits > 0].min() >= 10 * max_hits

    config = smoke_config(directory, cache_dir, data__max_hits=max_hits, train__steps=8, train__log_every=1,
                          train__eval_every=8, train__checkpoint_every=8, train__histogram_every=0)
    # A zero-hit example: nothing in the mask, an empty image, the raw sum clamped, finite inputs.
    setup = train.Setup(config)
    parse = pipeline.ParseEvent(max_hits, setup.host_target_spec, setup.meta["target_stats"],
                                len(setup.geometry))
    empty = parse.map(records.serialize(train_events[3]))
    assert empty["n_hits"] == 0 and not empty["mask"].any() and empty["truncated"] == 0
    batch = jax.tree.map(lambda x: np.asarray(x)[None], empty)
    batch.pop("event_id")
    inputs = steps.prepare(setup.table, setup.cell_weight, batch, target_spec=setup.target_spec,
                           stats=setup.stats)
    assert float(inputs.raw_energy[0]) == pytest.approx(1e-6) and not np.asarray(inputs.image).any()
    assert np.isfinite(np.asarray(inputs.features)).all() and np.isfinite(np.asarray(inputs.targets)).all()
    # 8 steps of 8 are one epoch: every event, the two empty ones included, is trained on once,
    # here in two runs (stop after 4, resume): the truncation count carries over the restart.
    config.train.stop_after = 4
    train.train_and_evaluate(config, tmp_path / "run")
    config.train.stop_after = 0
    result = train.train_and_evaluate(config, tmp_path / "run")
    assert int(result["state"].step) == 8
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in rows if "train/loss" in r}
    assert sorted(logged) == list(range(1, 9))
    assert all(np.isfinite(r["train/loss"]) and np.isfinite(r["train/grad_norm"]) for r in logged.values())
    assert logged[8]["train/truncated_hits"] == np.maximum(n_hits - max_hits, 0).sum()
    assert np.isfinite(result["metrics"]["loss"])


# ----------------------------------------------------------------------------- configs and workdirs


@pytest.mark.parametrize("args, message", [
    (["--config", "configs/default.py:smoke", "--config.train.stepz=3"], "unknown config key 'stepz'"),
    (["--config", "configs/nope.py"], "config file configs/nope.py does not exist"),
])
def test_bad_config_is_a_one_line_error(tmp_path, args, message):
    proc = subprocess.run([sys.executable, "scripts/train.py", *args, "--workdir", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("missing", ["dataset", "geometry"])
def test_missing_input_is_a_one_line_error(missing, data_dir, tmp_path):
    nowhere = tmp_path / "nowhere"
    data, geometry = (nowhere, data_dir / "geometry.npz") if missing == "dataset" else \
        (data_dir, nowhere / "geometry.npz")
    proc = subprocess.run([sys.executable, "scripts/train.py", "--config", "configs/default.py:smoke",
                           f"--config.data.dir={data}", f"--config.data.geometry={geometry}",
                           "--workdir", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    named = str(nowhere if missing == "dataset" else geometry)
    assert len(lines) == 1 and named in lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_workdir_of_another_model_is_refused_naming_the_keys(data_dir, cache_dir, tmp_path):
    train.train_and_evaluate(smoke_config(data_dir, cache_dir, train__steps=1, train__histogram_every=0),
                             tmp_path)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    other = smoke_config(data_dir, cache_dir, train__steps=1, model__channels=(4, 8))
    with pytest.raises(checkpoint.CheckpointMismatchError,
                       match=f"{re.escape(str(tmp_path.resolve()))}/checkpoints holds a checkpoint of "
                             r"another setup \(model.channels: \[8, 16\] -> \[4, 8\]\)"):
        train.train_and_evaluate(other, tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # left intact


def test_resume_check_ignores_implementation_only_keys(data_dir, cache_dir):
    config = smoke_config(data_dir, cache_dir, "cnn_local3d.py:smoke")
    saved = config.to_dict()
    del saved["model"]["conv3d"]  # a checkpoint from before the option existed
    config.model.conv3d = "unfold"
    checkpoint.check_compatible(saved, config, "w")  # how the convolution is computed: no refusal
    config.model.channels = (2, 4)
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"model.channels"):
        checkpoint.check_compatible(saved, config, "w")


# ----------------------------------------------------------------------------- NaN in a batch


def test_nan_batch_stops_naming_the_step_and_keeps_the_last_checkpoint(data_dir, cache_dir, tmp_path,
                                                                     monkeypatch):
    fast_next = pipeline.DeviceIterator.__next__

    def poisoned(self):
        batch = fast_next(self)
        if self.batches == 4:  # the 4th batch: step 4 in the logs' (1-based) numbering
            batch["energies"] = batch["energies"] * np.nan
        return batch

    monkeypatch.setattr(pipeline.DeviceIterator, "__next__", poisoned)
    config = smoke_config(data_dir, cache_dir, train__steps=6, train__checkpoint_every=2,
                          train__log_every=1, train__histogram_every=0)
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient at step 4"):
        train.train_and_evaluate(config, tmp_path)
    assert _committed(tmp_path) == [2]
    monkeypatch.undo()
    _, _, state, step = train.restore(tmp_path)
    assert step == 2 and int(state.step) == 2 and int(state.first_bad_step) == -1
    assert all(np.isfinite(x).all() for x in leaves(state))

