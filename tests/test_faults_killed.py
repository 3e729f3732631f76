"""Faults from killed processes: training and shard writers SIGKILLed mid-run, then rerun.

Kills are real SIGKILLs of subprocesses, each bounded by a deadline; the smoke dataset (96
simulated events on a 12-layer sector) is simulated once per module. docs/reliability.md lists
the cases.
"""

import json
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hgcal_jax import cli, train
from hgcal_jax.data import shards, streaming
from hgcal_jax.simulation import simulator
from hgcal_jax.simulation.spec import SimulationSpec
from tests.fault_helpers import (
    ENV,
    _committed,
    _sigkill,
    _wait_for,
    leaves,
)
from tests.train_helpers import REPO, smoke_config

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
    # metrics.jsonl holds each step once: the resumed run replaced the rows logged after the
    # checkpoint, then ran from the last complete checkpoint on.
    all_rows = _train_rows(workdir)
    assert [r["step"] for r in all_rows] == list(range(1, 13))
    rows = [r for r in all_rows if r["step"] > last]
    assert [r["step"] for r in rows] == list(range(last + 1, 13))
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


