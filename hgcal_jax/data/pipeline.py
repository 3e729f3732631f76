"""Grain input pipelines: ArrayRecord shards -> parsed, padded, canonical batches -> device.

Training (`train_dataset`):

    MapDataset.source(ShardSource(shards))[process_index::process_count]   # (where, bytes)
      .shuffle(seed).repeat()        # shuffle before repeat: every epoch is a new permutation
      .map(ParseEvent)               # parse, reflect -z to +z, pad/truncate hits, encode targets
      .batch(per_process_batch, drop_remainder=True)
      .to_iter_dataset(ReadOptions)  # read threads
      .mp_prefetch(workers)          # worker processes (0 in tests), numpy only

Evaluation (`eval_dataset`): no shuffle, each example exactly once; the last batch is padded to
the full batch size with `weight == 0` rows, and every process yields the same number of batches.

`DeviceIterator` turns host batches into global jax.Arrays laid out on the data-parallel
sharding with `jax.make_array_from_process_local_data` (the same code on one host or many),
keeps one batch in flight, measures how long the consumer waited for input, and exposes a
checkpointable `get_state`/`set_state` that accounts for the batch in flight.

Bad input ends with an error naming the shard and record: `ShardSource` turns a read error of a
corrupt shard into a DatasetError, and `ParseEvent` raises RecordError for an invalid record
(NaN or infinite energies, and with `PipelineSpec.n_cells` cell indices beyond the geometry).
Hits beyond `max_hits` are dropped and counted (`truncated`, summed by `DeviceIterator`).

Batch layout (per example): cells (max_hits,) int32, energies (max_hits,) float32, mask
(max_hits,) bool, n_hits, truncated (hits dropped by the max_hits cut; the lowest energies go),
zside (the endcap before canonicalisation), event_id, weight (1, or 0 for eval padding),
targets (T,) float32, truth {field: float32} in the +z frame.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import grain
import jax
import numpy as np
from absl import flags

from hgcal_jax import targets
from hgcal_jax.data import records, shards

# Fields that stay numpy on the host (64-bit ids do not survive JAX's default 32-bit mode).
HOST_KEYS = ("event_id",)
TRUTH_FLOATS = tuple(n for n in records.TRUTH_FIELDS if records.TRUTH_DTYPE[n].kind == "f")


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    batch_size: int = 64  # global batch (all processes)
    max_hits: int = 1024
    seed: int = 0
    workers: int = 0  # mp_prefetch worker processes; 0 = parse in the main process
    read_threads: int = 4
    prefetch_buffer: int = 64
    per_worker_buffer: int = 2
    n_cells: int | None = None  # the geometry's size: records with a cell beyond it are refused


def kept_hits(energies: np.ndarray, max_hits: int) -> np.ndarray:
    """Indices (in cell order) of the hits the max_hits cut keeps: the most energetic ones, so
    noise and shower tails go first. Shared by the parser and the training statistics."""
    if len(energies) <= max_hits:
        return np.arange(len(energies))
    return np.sort(np.argpartition(-energies, max_hits - 1)[:max_hits])


class ParseEvent(grain.transforms.Map):
    """Record bytes -> one padded, canonical example (numpy only: it runs in Grain workers)."""

    def __init__(self, max_hits: int, target_spec: targets.TargetSpec, stats: Mapping,
                 n_cells: int | None = None):
        self.max_hits = max_hits
        self.target_spec = target_spec
        self.stats = dict(stats)
        self.n_cells = n_cells

    def map(self, item: tuple[str, bytes] | bytes) -> dict:
        """One example from `(where, bytes)` of a ShardSource, or from bare record bytes."""
        where, blob = item if isinstance(item, tuple) else ("record", item)
        event = records.parse(blob, where, self.n_cells)
        n = len(event.cells)
        cells, energies = event.cells, event.energies
        if n > self.max_hits:
            keep = kept_hits(energies, self.max_hits)
            cells, energies = cells[keep], energies[keep]
        m = len(cells)
        out_cells = np.zeros(self.max_hits, np.int32)
        out_energies = np.zeros(self.max_hits, np.float32)
        mask = np.zeros(self.max_hits, bool)
        out_cells[:m], out_energies[:m], mask[:m] = cells, energies, True
        zside = int(event.truth["zside"])
        if zside not in (1, -1):
            raise records.RecordError(f"{where} (event {event.event_id}): zside {zside} is not +1 or -1")
        raw = {name: np.asarray([event.truth[name]], np.float64) for name in TRUTH_FLOATS}
        canonical = targets.reflect_to_plus_z(raw, np.asarray([zside]))
        return {
            "cells": out_cells,
            "energies": out_energies,
            "mask": mask,
            "n_hits": np.int32(n),
            "truncated": np.int32(n - m),
            "zside": np.int32(zside),
            "event_id": np.int64(event.truth["event_id"]),
            "weight": np.float32(1.0),
            "targets": self.target_spec.encode(canonical, self.stats)[0],
            "truth": {name: np.float32(canonical[name][0]) for name in TRUTH_FLOATS},
        }


class ShardSource:
    """Grain's ArrayRecordDataSource over shards, yielding `(where, bytes)` per record.

    `where` ("train-00001-of-00008.arrayrecord[17]") lets ParseEvent name the record it refuses,
    and a read error (riegeli's bare RuntimeError for a corrupt chunk) becomes a DatasetError
    naming the shard and record, also from Grain's read threads and worker processes.
    """

    def __init__(self, paths: Sequence[Path]):
        self._names = [Path(p).name for p in paths]
        self._paths = [str(p) for p in paths]
        self._source = grain.sources.ArrayRecordDataSource(self._paths)
        self._starts = np.cumsum([0] + [shards.num_records(Path(p)) for p in self._paths])

    def __len__(self) -> int:
        return len(self._source)

    def _where(self, index: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        return shard, index - int(self._starts[shard])

    def __getitem__(self, index) -> tuple[str, bytes]:
        index = int(index)
        shard, local = self._where(index)
        try:
            blob = self._source[index]
        except RuntimeError as e:
            raise shards.DatasetError(f"shard {self._paths[shard]} record {local} is unreadable "
                                      f"(corrupt): {e}") from e
        return f"{self._names[shard]}[{local}]", blob


def _source(paths: Sequence[Path]):
    return grain.MapDataset.source(ShardSource(paths))


def _per_process_batch(batch_size: int, process_count: int) -> int:
    if batch_size % process_count:
        raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
    return batch_size // process_count


def _allow_worker_flags() -> None:
    # Grain's workers read absl flags; outside absl.app (tests, notebooks) mark them parsed first.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def train_dataset(paths: Sequence[Path], spec: PipelineSpec, target_spec: targets.TargetSpec,
                  stats: Mapping, process_index: int | None = None,
                  process_count: int | None = None) -> grain.IterDataset:
    """Infinite, shuffled training batches of this process's slice of the shards."""
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    ds = _source(paths)[process_index::process_count]
    ds = ds.shuffle(seed=spec.seed).repeat()
    ds = ds.map(ParseEvent(spec.max_hits, target_spec, stats, spec.n_cells))
    ds = ds.batch(_per_process_batch(spec.batch_size, process_count), drop_remainder=True)
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=spec.read_threads,
                                              prefetch_buffer_size=spec.prefetch_buffer))
    if spec.workers > 0:
        _allow_worker_flags()
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=spec.workers,
                                                         per_worker_buffer_size=spec.per_worker_buffer))
    return it


class _EvalBatch(grain.transforms.Map):
    """Batch index -> a full batch of consecutive examples, padded with weight-0 rows."""

    def __init__(self, examples: grain.MapDataset, size: int, parse: ParseEvent, template_source):
        # template_source: any example of the split, to shape the padding of a process whose own
        # slice is empty (more processes than examples).
        self.examples, self.size, self.parse = examples, size, parse
        self.template_source = template_source

    def map(self, index: int) -> dict:
        start = index * self.size
        rows = [self.parse.map(self.examples[i])
                for i in range(start, min(start + self.size, len(self.examples)))]
        template = rows[0] if rows else self.parse.map(self.template_source[0])
        # Padding rows: no hits and weight 0, so they are valid input that counts for nothing.
        blank = jax.tree.map(np.zeros_like, template)
        rows += [blank] * (self.size - len(rows))
        return jax.tree.map(lambda *xs: np.stack(xs), *rows)


def eval_dataset(paths: Sequence[Path], spec: PipelineSpec, target_spec: targets.TargetSpec,
                 stats: Mapping, process_index: int | None = None,
                 process_count: int | None = None) -> grain.MapDataset:
    """Every example of the shards exactly once, in order, in full batches padded with weight 0.

    All processes yield the same number of batches (a process with fewer examples gets more
    padding), so a multi-host evaluation loop runs the same number of steps everywhere.
    """
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    source = _source(paths)
    if not len(source):
        raise ValueError(f"evaluation shards {[str(p) for p in paths]} hold no examples")
    per_process = _per_process_batch(spec.batch_size, process_count)
    longest = math.ceil(len(source) / process_count)  # the biggest process slice
    n_batches = math.ceil(longest / per_process)
    examples = source[process_index::process_count]
    parse = ParseEvent(spec.max_hits, target_spec, stats, spec.n_cells)
    return grain.MapDataset.range(n_batches).map(_EvalBatch(examples, per_process, parse, source))


class DeviceIterator:
    """Host batches -> globally sharded device batches, one in flight; checkpointable.

    `wait_s` accumulates the time the consumer spent blocked on input (for input_bound_fraction);
    `truncated` counts the hits dropped by the max_hits cut in the batches returned so far; it is
    part of the checkpointed state, so a resumed run goes on counting from where it stopped.
    """

    def __init__(self, host: Iterator[dict], sharding: jax.sharding.Sharding, prefetch: int = 1,
                 host_keys: Sequence[str] = HOST_KEYS):
        self._host = host
        self._host_keys = tuple(host_keys)
        self._sharding = sharding
        self._prefetch = prefetch
        self._queue: collections.deque = collections.deque()
        self._checkpointable = hasattr(host, "get_state")
        self.wait_s = 0.0
        self.batches = 0
        self.truncated = 0

    def _put(self, batch: dict):
        device = {k: v for k, v in batch.items() if k not in self._host_keys}
        out = jax.tree.map(lambda x: jax.make_array_from_process_local_data(self._sharding, x), device)
        out.update({k: batch[k] for k in self._host_keys if k in batch})
        return out

    def _fill(self) -> None:
        while len(self._queue) < self._prefetch + 1:
            state = self._host.get_state() if self._checkpointable else None
            try:
                host_batch = next(self._host)
            except StopIteration:
                return
            # Counted when consumed (in __next__), not here: the prefetched batch is not trained on yet.
            truncated = int(np.sum(host_batch.get("truncated", 0)))
            self._queue.append((state, self._put(host_batch), truncated))

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        start = time.perf_counter()
        self._fill()
        if not self._queue:
            raise StopIteration
        _, batch, truncated = self._queue.popleft()
        self.wait_s += time.perf_counter() - start
        self.batches += 1
        self.truncated += truncated
        return batch

    def get_state(self) -> bytes:
        """The host iterator's state before the next batch this iterator will return (JSON bytes,
        the form `grain.checkpoint.CheckpointHandler` stores for non-dataset iterators)."""
        if not self._checkpointable:
            raise TypeError("the host iterator is not checkpointable")
        state = self._queue[0][0] if self._queue else self._host.get_state()
        return json.dumps({"host": state, "truncated": self.truncated}).encode()

    def set_state(self, state: bytes) -> None:
        self._queue.clear()
        saved = json.loads(state)
        if isinstance(saved, dict) and set(saved) == {"host", "truncated"}:
            self.truncated = int(saved["truncated"])
            saved = saved["host"]
        self._host.set_state(saved)  # else a checkpoint from before the count was saved

    def start_prefetch(self) -> None:
        """Called by Grain's checkpoint handler after a restore; batches are fetched on demand."""

    def close(self) -> None:
        """Frees Grain's worker processes and shared memory."""
        self._queue.clear()
        close = getattr(self._host, "close", None)
        if close:
            close()
