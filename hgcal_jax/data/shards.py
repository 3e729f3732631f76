"""Datasets of events as ArrayRecord shards (group_size:1, zstd) plus one meta.json.

Layout of a dataset directory:

    meta.json                                   counts, geometry hash, source config, stats
    train-00000-of-00008.arrayrecord ...        one file per shard, per split

A shard is written under a temporary name and renamed when complete, so a listed shard is
always whole; an interrupted run is resumed by skipping the shards that exist. meta.json is
written last (atomically), and readers check every shard's record count against it, so a
truncated or foreign shard is an error naming the file, never silently read. Riegeli hashes every
chunk, so flipped bytes inside a shard fail the read; the readers here (and the Grain source of
`hgcal_jax.data.pipeline`) turn that into a DatasetError naming the shard.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import tqdm
from array_record.python import array_record_module

from hgcal_jax import targets
from hgcal_jax.data import records
from hgcal_jax.geometry import io as geometry_io

WRITER_OPTIONS = "group_size:1,zstd:3"
FORMAT = "hgcal_jax.events"
META = "meta.json"
PLAN = "plan.json"
SPLITS = ("train", "val", "test")
_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.arrayrecord$")


class DatasetError(ValueError):
    """A dataset directory is incomplete, inconsistent or built for another geometry."""


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}-{index:05d}-of-{count:05d}.arrayrecord"


@dataclasses.dataclass(frozen=True)
class ShardTask:
    """One shard to write: which split, which index, how many events, which seed."""

    split: str
    index: int
    count: int
    n_events: int
    seed: int
    first_event_id: int

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index, self.count)


def plan(split_events: dict[str, int], events_per_shard: int, seed: int) -> list[ShardTask]:
    """Shard tasks for each split; event ids are unique across the dataset."""
    tasks, next_id = [], 0
    for split_id, (split, n_events) in enumerate(split_events.items()):
        count = max(1, -(-n_events // events_per_shard))
        for index in range(count):
            n = n_events // count + (index < n_events % count)
            # Seeds depend on (seed, split, shard) only: resumed runs redo a shard identically.
            shard_seed = int(np.random.SeedSequence([seed, split_id, index]).generate_state(1)[0])
            tasks.append(ShardTask(split, index, count, n, shard_seed, next_id))
            next_id += n
    return tasks


def write_shard(path: str | os.PathLike, events: Iterable[records.Event]) -> tuple[int, int]:
    """Writes events to `path` atomically; returns (records, hits)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n_records = n_hits = 0
    writer = array_record_module.ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    try:
        for event in events:
            writer.write(records.serialize(event))
            n_records += 1
            n_hits += len(event.cells)
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return n_records, n_hits


def _run_task(produce, directory: Path, task: ShardTask) -> tuple[ShardTask, int, int]:
    n_records, n_hits = write_shard(directory / task.name, produce(task))
    if n_records != task.n_events:
        (directory / task.name).unlink()
        raise DatasetError(f"shard {task.name}: producer gave {n_records} events, expected {task.n_events}")
    return task, n_records, n_hits


def write_dataset(directory: str | os.PathLike, tasks: list[ShardTask],
                  produce: Callable[[ShardTask], Iterator[records.Event]], meta: dict,
                  workers: int = 1, progress: bool = True) -> dict:
    """Writes every missing shard with `workers` processes, then meta.json; returns the meta.

    `produce(task)` yields the task's events; it must be picklable (a module-level function or
    a functools.partial of one) when workers > 1. Existing shards are kept (resume).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _check_plan(directory, tasks, meta)
    for stale in directory.glob(".*.tmp-*"):
        stale.unlink()  # leftovers of a killed writer: never listed, safe to drop
    todo = [t for t in tasks if not (directory / t.name).is_file()]
    if len(todo) < len(tasks):
        logging.info("resuming %s: %d of %d shards already complete", directory,
                     len(tasks) - len(todo), len(tasks))
    total = sum(t.n_events for t in todo)
    start = time.perf_counter()
    with tqdm.tqdm(total=total, unit="ev", desc=f"writing {directory.name}", disable=not progress,
                   smoothing=0.1) as bar:
        if workers > 1 and len(todo) > 1:
            context = multiprocessing.get_context("spawn")  # no forked JAX/absl state in workers
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = [pool.submit(_run_task, produce, directory, t) for t in todo]
                for future in concurrent.futures.as_completed(futures):
                    bar.update(future.result()[1])
        else:
            for t in todo:
                bar.update(_run_task(produce, directory, t)[1])
    return finalize(directory, tasks, meta, total, time.perf_counter() - start)


def finalize(directory: Path, tasks: list[ShardTask], meta: dict, events_written: int,
             elapsed_s: float) -> dict:
    """Completes `meta` with the dataset's format, splits and train statistics; writes meta.json.

    Called once every shard of `tasks` is in place; meta.json is the last file written.
    """
    meta = dict(meta)
    meta.update({
        "format": FORMAT,
        "record_version": records.RECORD_VERSION,
        "writer_options": WRITER_OPTIONS,
        "splits": _split_summary(Path(directory), tasks),
        "target_stats": target_stats(Path(directory), [t for t in tasks if t.split == "train"]),
        "write_events_per_s": round(events_written / elapsed_s, 1) if events_written and elapsed_s > 0
        else None,
    })
    write_meta(Path(directory), meta)
    return meta


def _check_plan(directory: Path, tasks: list[ShardTask], meta: dict) -> None:
    """Records what this directory is being written with; refuses to resume with anything else.

    Without it, a rerun with other settings would keep the old complete shards and mix two
    datasets. plan.json is written before the first shard, so it also covers killed runs.
    """
    plan_doc = json.loads(json.dumps({"tasks": [dataclasses.asdict(t) for t in tasks],
                                      "meta": meta}, sort_keys=True, default=str))
    path = directory / PLAN
    if path.is_file():
        existing = json.loads(path.read_text())
        if existing != plan_doc:
            changed = sorted(k for k in set(existing["meta"]) | set(plan_doc["meta"])
                             if existing["meta"].get(k) != plan_doc["meta"].get(k))
            if existing["tasks"] != plan_doc["tasks"]:
                changed.append("tasks (split sizes, events_per_shard or seed)")
            raise DatasetError(f"{directory} was started with other settings ({', '.join(changed)}); "
                               f"use another directory or delete this one")
        return
    geometry_io.atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(plan_doc, indent=1)))


def _split_summary(directory: Path, tasks: list[ShardTask]) -> dict:
    out: dict[str, dict] = {}
    for t in tasks:
        entry = out.setdefault(t.split, {"events": 0, "shards": []})
        entry["events"] += t.n_events
        entry["shards"].append({"name": t.name, "records": t.n_events,
                                "bytes": (directory / t.name).stat().st_size})
    return out


def num_records(path: Path) -> int:
    """The record count of one shard; a read error is a DatasetError naming the file."""
    try:
        reader = array_record_module.ArrayRecordReader(str(path))
        try:
            return reader.num_records()
        finally:
            reader.close()
    except RuntimeError as e:  # riegeli's message does not name the file
        raise DatasetError(f"shard {path} is unreadable (corrupt or truncated): {e}") from e


def read_all(path: Path) -> list[bytes]:
    """Every record of one shard; a read error is a DatasetError naming the file.

    Riegeli hashes every chunk, so flipped bytes fail the read (or, in the zero padding, change
    nothing); its RuntimeError does not say which file it was reading.
    """
    try:
        reader = array_record_module.ArrayRecordReader(str(path))
        try:
            return reader.read_all()
        finally:
            reader.close()
    except RuntimeError as e:
        raise DatasetError(f"shard {path} is unreadable (corrupt or truncated): {e}") from e


def read_truth(path: Path) -> np.ndarray:
    """All truth rows of one shard, as a TRUTH_DTYPE array."""
    blobs = read_all(path)
    return np.array([records.parse_truth(b, f"{path.name}[{i}]") for i, b in enumerate(blobs)],
                    dtype=records.TRUTH_DTYPE)


def target_stats(directory: Path, train_tasks: list[ShardTask]) -> dict:
    """Mean and std of every float truth field over the train split, in the +z frame.

    Statistics are of the canonical values the pipeline feeds the network (-z events reflected,
    so eta is |eta|), and `log_energy` is that of ln(energy).
    """
    if not train_tasks:
        return {}
    raw = np.concatenate([read_truth(directory / t.name) for t in train_tasks])
    truth = targets.reflect_to_plus_z({name: raw[name] for name in records.TRUTH_FIELDS}, raw["zside"])
    stats = {}
    for name in records.TRUTH_FIELDS:
        if records.TRUTH_DTYPE[name].kind == "f":
            values = truth[name].astype(np.float64)
            values = values[np.isfinite(values)]
            if len(values):
                stats[name] = {"mean": float(values.mean()), "std": float(values.std())}
    stats["log_energy"] = {"mean": float(np.log(truth["energy"]).mean()),
                           "std": float(np.log(truth["energy"]).std())}
    return stats


def write_meta(directory: Path, meta: dict) -> None:
    geometry_io.atomic_write(Path(directory) / META,
                             lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2) + "\n"))


def read_meta(directory: str | os.PathLike) -> dict:
    path = Path(directory) / META
    if not path.is_file():
        raise DatasetError(f"dataset {directory} has no {META}: it is incomplete (rerun the "
                           f"writer with the same arguments to resume) or not a dataset")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from e


def open_split(directory: str | os.PathLike, split: str, geometry_hash: str | None = None,
               check_counts: bool = True) -> tuple[list[Path], dict]:
    """The shard paths of a split, checked against meta.json; and the meta.

    Raises DatasetError naming the file for: a missing meta.json, another record version, a
    geometry hash that is not `geometry_hash`, a missing shard, a shard whose record count
    differs from meta.json (truncated or replaced).
    """
    directory = Path(directory)
    meta = read_meta(directory)
    if meta.get("record_version") != records.RECORD_VERSION:
        raise DatasetError(f"{directory / META}: record version {meta.get('record_version')}, "
                           f"this code reads {records.RECORD_VERSION}")
    if geometry_hash is not None and meta.get("geometry_hash") != geometry_hash:
        raise DatasetError(f"{directory / META}: shards were written for geometry "
                           f"{meta.get('geometry_hash')}, but the geometry in use has hash {geometry_hash}")
    if split not in meta.get("splits", {}):
        raise DatasetError(f"{directory / META}: no split {split!r} (has {sorted(meta.get('splits', {}))})")
    paths = []
    for shard in meta["splits"][split]["shards"]:
        path = directory / shard["name"]
        if not path.is_file():
            raise DatasetError(f"shard {path} listed in {META} is missing")
        if check_counts:
            n = num_records(path)
            if n != shard["records"]:
                raise DatasetError(f"shard {path} has {n} records, {META} says {shard['records']}: "
                                   f"truncated or replaced")
        paths.append(path)
    return paths, meta


def iter_events(paths: Iterable[Path], n_cells: int | None = None) -> Iterator[records.Event]:
    """Every event of the given shards, in order (for tools and tests; training uses Grain).

    Errors name the shard and record: DatasetError for an unreadable shard, RecordError for an
    invalid record (with `n_cells`, also a cell index beyond the geometry).
    """
    for path in paths:
        for i, blob in enumerate(read_all(path)):
            yield records.parse(blob, f"{path.name}[{i}]", n_cells)
