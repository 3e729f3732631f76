"""A dataset written from one stream of events whose count is unknown until the stream ends.

`shards.write_dataset` plans shards from known counts, because a shard's name carries the shard
count of its split (`train-00003-of-00008`). A converter of real files learns the counts only at
the end, so here each split buffers `events_per_shard` events, writes them (atomically, with
`shards.write_shard`) into a hidden staging folder, and once the stream is exhausted the staged
shards are renamed to their final names and meta.json is written last. Readers therefore never
see a partial shard: until meta.json exists, `shards.open_split` reports the dataset incomplete.

Splits are assigned per event from a hash of (event_id, seed): deterministic, independent of the
order and chunking of the stream, and stable when inputs are appended. An empty split has no
shards and is left out of meta.json's `splits` (`shards.open_split` then raises DatasetError
naming it).

Reruns: meta.json stores the `request` (inputs, options, geometry hash). A rerun with the same
request over a complete output returns the stored meta without work; any other rerun first
deletes meta.json, then the shards and the staging folder, and writes everything again. Other
files in the folder (e.g. geometry.npz) are kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from hgcal_jax.data import records, shards

log = logging.getLogger(__name__)

STAGING = ".staging"
_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """SplitMix64 finaliser: a well-mixed 64-bit hash of an integer (pure Python, exact)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Validated split fractions: lowercase names, non-negative, summing to 1."""
    fractions = {str(k): float(v) for k, v in fractions.items()}
    bad = [k for k in fractions if not (k.isascii() and k.isalpha() and k.islower())]
    if bad or not fractions:
        raise ValueError(f"split names must be lowercase letters (shard names), got {list(fractions)}")
    if any(v < 0 for v in fractions.values()) or abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    return fractions


def split_of(event_id: int, seed: int, fractions: Mapping[str, float]) -> str:
    """The split of an event: a uniform hash of (event_id, seed) cut at the cumulative fractions."""
    u = _splitmix64((event_id & _MASK64) ^ _splitmix64(seed & _MASK64)) / 2.0**64
    total = 0.0
    names = [k for k, v in fractions.items() if v > 0]
    for name in names[:-1]:
        total += fractions[name]
        if u < total:
            return name
    return names[-1]  # also catches the rounding of the cumulative sum


def existing(directory: str | os.PathLike, request: dict) -> dict | None:
    """The meta of a complete dataset in `directory` written for `request`, else None."""
    path = Path(directory) / shards.META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    # Compare through JSON so tuples and lists (and int/float keys) compare as stored.
    if meta.get("request") != json.loads(json.dumps(request)):
        return None
    for split in meta.get("splits", {}).values():
        for shard in split["shards"]:
            file = Path(directory) / shard["name"]
            if not file.is_file() or file.stat().st_size != shard["bytes"]:
                return None
    return meta


def clear(directory: str | os.PathLike) -> None:
    """Removes meta.json (first, so the folder reads as incomplete), shards and staging."""
    directory = Path(directory)
    (directory / shards.META).unlink(missing_ok=True)
    for path in directory.glob("*-of-*.arrayrecord"):
        path.unlink()
    for path in directory.glob(".*.tmp-*"):
        path.unlink()
    shutil.rmtree(directory / STAGING, ignore_errors=True)


def write_stream(
    directory: str | os.PathLike,
    events: Iterable[records.Event],
    split_fn: Callable[[records.Event], str],
    events_per_shard: int,
    seed: int,
    meta_fn: Callable[[], dict],
    request: dict,
) -> dict:
    """Writes `events` into split shards of `directory`, then meta.json; returns the meta.

    `split_fn(event)` names the event's split. `meta_fn()` is called once the stream is
    exhausted (so it can report counts gathered while streaming); its dict is extended with the keys that
    `shards.write_dataset` writes (format, record_version, writer_options, splits, target_stats)
    and `request` (what `existing` compares on a rerun).
    """
    if events_per_shard < 1:
        raise ValueError(f"events_per_shard must be >= 1, got {events_per_shard}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clear(directory)
    staging = directory / STAGING
    staging.mkdir()
    buffers: dict[str, list[records.Event]] = {}
    staged: dict[str, list[tuple[Path, int, int]]] = {}  # split -> (path, records, first id)

    def flush(split: str) -> None:
        events_ = buffers.pop(split)
        path = staging / f"{split}-{len(staged.get(split, [])):05d}.arrayrecord"
        n_records, _ = shards.write_shard(path, events_)
        staged.setdefault(split, []).append((path, n_records, events_[0].event_id))

    start = time.perf_counter()
    total = 0
    for event in events:
        split = split_fn(event)
        buffers.setdefault(split, []).append(event)
        total += 1
        if len(buffers[split]) >= events_per_shard:
            flush(split)
    for split in list(buffers):
        flush(split)

    tasks = []
    # train, val, test first (as shards.SPLITS), then any other split by name.
    order = {name: i for i, name in enumerate(shards.SPLITS)}
    for split in sorted(staged, key=lambda name: (order.get(name, len(order)), name)):
        parts = staged[split]
        for index, (path, n_records, first_id) in enumerate(parts):
            task = shards.ShardTask(split, index, len(parts), n_records, seed, first_id)
            os.replace(path, directory / task.name)
            tasks.append(task)
    staging.rmdir()
    elapsed = time.perf_counter() - start
    meta = shards.finalize(directory, tasks, {**meta_fn(), "request": request}, total, elapsed)
    log.info("wrote %d events into %d shards of %s", total, len(tasks), directory)
    return json.loads(json.dumps(meta))
