"""Faults and bad input: every case ends with an error naming the file, event or key, or with a
documented, counted recovery, never with lost or silently wrong data. docs/reliability.md lists
the cases and points at these tests.

Kills are real SIGKILLs of subprocesses, each bounded by a deadline; the smoke dataset (96
simulated events on a 12-layer sector) is simulated once per module.
"""

import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from hgcal_jax import checkpoint, cli, interpolation, steps, targets, train
from hgcal_jax.data import pipeline, records, shards, streaming
from hgcal_jax.geometry import io as geometry_io
from hgcal_jax.geometry import synthetic
from hgcal_jax.interpolation import table as table_lib
from hgcal_jax.simulation import simulator
from hgcal_jax.simulation.spec import SimulationSpec
from tests.train_helpers import REPO, make_dataset, smoke_config

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SHARD = "train-00000-of-00002.arrayrecord"  # events 0-31 of the smoke dataset
TARGETS = targets.TargetSpec(names=("energy", "impact_x", "impact_y"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("smoke_data"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def leaves(state) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


def edited_dataset(src: Path, dst: Path, edit) -> Path:
    """The smoke dataset rewritten with `edit(event) -> Event` applied to every event.

    Written through shards.write_dataset, so meta.json and the record counts are consistent: the
    fault is in the records alone, as a buggy or foreign writer would leave it.
    """
    meta = shards.read_meta(src)
    events = {e.event_id: e for split in meta["splits"]
              for e in shards.iter_events(shards.open_split(src, split)[0])}
    tasks = shards.plan({s: v["events"] for s, v in meta["splits"].items()}, meta["events_per_shard"],
                        meta["seed"])
    produce = lambda t: (edit(events[i]) for i in range(t.first_event_id, t.first_event_id + t.n_events))  # noqa: E731
    keep = {k: meta[k] for k in ("source", "geometry_hash", "energy_unit")}
    shards.write_dataset(dst, tasks, produce, keep, progress=False)
    shutil.copy(src / "geometry.npz", dst / "geometry.npz")
    return dst


def train_batches(directory: Path, n_cells: int | None, n: int = 10) -> None:
    """Pulls `n` batches of 8 (more than one epoch of the 64 train events) through Grain."""
    paths, meta = shards.open_split(directory, "train")
    spec = pipeline.PipelineSpec(batch_size=8, max_hits=256, n_cells=n_cells)
    it = iter(pipeline.train_dataset(paths, spec, TARGETS, meta["target_stats"]))
    try:
        for _ in range(n):
            next(it)
    finally:
        it.close()  # stops Grain's read threads, also on the expected error


def _data_end(data: bytes) -> int:
    """End of a shard's chunk region: the start of Riegeli's zero padding before the footer."""
    nonzero = np.flatnonzero(np.frombuffer(data, np.uint8))
    return int(nonzero[np.flatnonzero(np.diff(nonzero) > 1024)[0]])


def _wait_for(proc: subprocess.Popen, ready, deadline_s: float, log: Path) -> None:
    """Polls `ready()` while `proc` runs; fails with the process's log if it ends or times out."""
    deadline = time.monotonic() + deadline_s
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before the kill:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"not ready after {deadline_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.005)


def _sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL


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
    # 8 steps of 8 are one epoch: every event, the two empty ones included, is trained on once.
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


# ----------------------------------------------------------------------------- killed processes

KILL_RUN = dict(train__steps=12, train__checkpoint_every=3, train__log_every=1, train__eval_every=12,
                train__histogram_every=0)

# The run to kill: the normal job, slowed by 0.2 s per batch (outside the numbers) so that the
# kill lands between checkpoints at a chosen step rather than after the end.
TRAIN_SCRIPT = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from hgcal_jax import train
    from hgcal_jax.data import pipeline
    from tests.train_helpers import smoke_config
    data, cache, workdir, kw = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    fast_next = pipeline.DeviceIterator.__next__
    def slow_next(self):
        batch = fast_next(self)
        time.sleep(0.2)
        return batch
    pipeline.DeviceIterator.__next__ = slow_next
    train.train_and_evaluate(smoke_config(data, cache, **kw), workdir)
""")


def _train_rows(workdir: Path) -> list[dict]:
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.endswith("}") and "train/loss" in x]


def _committed(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def test_training_killed_at_a_random_step_resumes_to_the_same_parameters(data_dir, cache_dir, tmp_path):
    straight = train.train_and_evaluate(smoke_config(data_dir, cache_dir, **KILL_RUN), tmp_path / "straight")
    kill_after = random.Random(9).randint(4, 10)  # a step between checkpoints 3, 6 and 9 (here 7)
    workdir = tmp_path / "killed"
    log = tmp_path / "killed.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(data_dir), str(cache_dir),
                                 str(workdir), json.dumps(KILL_RUN)], cwd=REPO, env=ENV, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        _wait_for(proc, lambda: _committed(workdir) and len(_train_rows(workdir)) >= kill_after, 300, log)
        _sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    killed_rows = _train_rows(workdir)
    last = _committed(workdir)[-1]
    assert 3 <= last <= len(killed_rows) < 12 and not (workdir / "final_metrics.json").exists()

    resumed = train.train_and_evaluate(smoke_config(data_dir, cache_dir, **KILL_RUN), workdir)
    assert int(resumed["state"].step) == 12
    rows = _train_rows(workdir)[len(killed_rows):]
    assert [r["step"] for r in rows] == list(range(last + 1, 13))  # from the last complete checkpoint
    # The steps run twice (after the checkpoint, before the kill) saw the same data and state.
    redone = {r["step"]: r["train/loss"] for r in killed_rows if r["step"] > last}
    assert redone == {r["step"]: r["train/loss"] for r in rows if r["step"] in redone}
    for a, b in zip(leaves(straight["state"]), leaves(resumed["state"]), strict=True):
        np.testing.assert_array_equal(a, b)


# The writer to kill: the normal simulation, slowed by 50 ms per event (outside the numbers).
SIMULATE_SCRIPT = textwrap.dedent("""
    import sys, time
    from hgcal_jax import cli
    from hgcal_jax.simulation import simulator
    from hgcal_jax.simulation.spec import SimulationSpec
    geometry, out, config = sys.argv[1:4]
    fast_event = simulator.Simulator.event
    def slow_event(self, rng, event_id=0):
        time.sleep(0.05)
        return fast_event(self, rng, event_id)
    simulator.Simulator.event = slow_event
    spec = SimulationSpec.from_config(cli.load(config).simulation)
    simulator.simulate_dataset(geometry, spec, out, {"train": 24, "val": 8}, 4, seed=0, progress=False)
""")


def test_shard_writer_killed_mid_write_lists_no_partial_shard_and_resumes(data_dir, tmp_path):
    config = f"{REPO / 'configs' / 'default.py'}:smoke"
    geometry = str(data_dir / "geometry.npz")
    spec = SimulationSpec.from_config(cli.load(config).simulation)
    split_events = {"train": 24, "val": 8}
    planned = {t.name: t.n_events for t in shards.plan(split_events, 4, seed=0)}
    reference = tmp_path / "straight"
    simulator.simulate_dataset(geometry, spec, str(reference), split_events, 4, seed=0, progress=False)

    out = tmp_path / "killed"
    complete = lambda: [p for p in out.glob("*.arrayrecord") if not p.name.startswith(".")]  # noqa: E731
    partial = lambda: list(out.glob(".*.tmp-*"))  # noqa: E731
    log = tmp_path / "killed.log"
    with open(log, "w") as stream:
        proc = subprocess.Popen([sys.executable, "-c", SIMULATE_SCRIPT, geometry, str(out), config], cwd=REPO,
                                env=ENV, stdout=stream, stderr=subprocess.STDOUT)
    try:
        _wait_for(proc, lambda: len(complete()) >= 2 and partial(), 120, log)
        _sigkill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    # What a killed writer leaves: hidden temporaries (never shard names), whole shards, no meta.json.
    assert all(not shards._NAME.match(p.name) for p in partial())
    kept = {p.name: p.stat().st_mtime_ns for p in complete()}
    assert 2 <= len(kept) < len(planned)
    for name in kept:
        assert shards.num_records(out / name) == planned[name]
        assert len(list(shards.iter_events([out / name]))) == planned[name]
    with pytest.raises(shards.DatasetError, match="has no meta.json: it is incomplete"):
        shards.open_split(out, "train")

    simulator.simulate_dataset(geometry, spec, str(out), split_events, 4, seed=0, progress=False)
    assert not partial()
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # resumed, not redone
    assert sorted(p.name for p in complete()) == sorted(planned)
    for name in planned:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    for split in split_events:
        assert shards.open_split(out, split)[1]["splits"] == shards.read_meta(reference)["splits"]


# The streaming writer (CMSSW ntuple conversion) over 40 synthetic events, `slow` s per event.
STREAM_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from hgcal_jax.data import records, streaming
    out, slow = sys.argv[1], float(sys.argv[2])
    def events():
        rng = np.random.default_rng(0)
        for i in range(40):
            time.sleep(slow)
            n = int(rng.integers(5, 50))
            yield records.make_event(rng.choice(5000, n, replace=False), rng.exponential(2.0, n),
                                     {"event_id": i, "energy": float(rng.uniform(10, 100))})
    fractions = {"train": 0.75, "val": 0.25}
    streaming.write_stream(out, events(), lambda e: streaming.split_of(e.event_id, 0, fractions), 4, 0,
                           lambda: {"geometry_hash": "g", "energy_unit": "GeV"}, {"events": 40})
""")


def test_stream_writer_killed_mid_write_lists_no_shard_and_rerun_completes(tmp_path):
    def run(out: Path, slow: float) -> subprocess.Popen:
        with open(tmp_path / f"{out.name}.log", "w") as log:  # the child keeps its own descriptor
            return subprocess.Popen([sys.executable, "-c", STREAM_SCRIPT, str(out), str(slow)], cwd=REPO,
                                    env=ENV, stdout=log, stderr=subprocess.STDOUT)

    reference, out = tmp_path / "straight", tmp_path / "killed"
    straight = run(reference, 0.0)
    proc = run(out, 0.05)
    try:
        staged = lambda: list((out / streaming.STAGING).glob("*.arrayrecord"))  # noqa: E731
        _wait_for(proc, lambda: len(staged()) >= 2, 120, tmp_path / "killed.log")
        _sigkill(proc)
        assert straight.wait(timeout=120) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        for p in (proc, straight):
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
    # Shards are staged in a hidden folder and renamed only once the stream ends: none is listed.
    assert staged() and not list(out.glob("*.arrayrecord")) and not (out / "meta.json").exists()
    with pytest.raises(shards.DatasetError, match="has no meta.json: it is incomplete"):
        shards.open_split(out, "train")

    rerun = run(out, 0.0)
    assert rerun.wait(timeout=120) == 0, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (out / streaming.STAGING).exists()
    names = sorted(p.name for p in reference.glob("*.arrayrecord"))
    assert names and sorted(p.name for p in out.glob("*.arrayrecord")) == names
    for name in names:
        assert list(shards.iter_events([out / name])) == list(shards.iter_events([reference / name])), name
    assert shards.read_meta(out)["splits"] == shards.read_meta(reference)["splits"]


# ----------------------------------------------------------------------------- NaN in a batch


def test_nan_batch_stops_naming_the_step_and_keeps_the_last_checkpoint(data_dir, cache_dir, tmp_path,
                                                                     monkeypatch):
    fast_next = pipeline.DeviceIterator.__next__

    def poisoned(self):
        batch = fast_next(self)
        if self.batches == 4:  # the 4th batch, consumed by step 3 (0-based)
            batch["energies"] = batch["energies"] * np.nan
        return batch

    monkeypatch.setattr(pipeline.DeviceIterator, "__next__", poisoned)
    config = smoke_config(data_dir, cache_dir, train__steps=6, train__checkpoint_every=2,
                          train__log_every=1, train__histogram_every=0)
    with pytest.raises(FloatingPointError, match="non-finite loss or gradient at step 3"):
        train.train_and_evaluate(config, tmp_path)
    assert _committed(tmp_path) == [2]
    monkeypatch.undo()
    _, _, state, step = train.restore(tmp_path)
    assert step == 2 and int(state.step) == 2 and int(state.first_bad_step) == -1
    assert all(np.isfinite(x).all() for x in leaves(state))
