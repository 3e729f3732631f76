"""Shared pieces of the fault tests."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from hgcal_jax import targets
from hgcal_jax.data import pipeline, shards
from tests.train_helpers import REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
SHARD = "train-00000-of-00002.arrayrecord"  # events 0-31 of the smoke dataset
TARGETS = targets.TargetSpec(names=("energy", "impact_x", "impact_y"))



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

def _committed(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []
