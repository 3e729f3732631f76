"""Grain pipelines: determinism, exact resume, exactly-once evaluation, process slices,
truncation counting, endcap canonicalisation."""

import dataclasses

import jax
import numpy as np
import pytest

from hgcal_jax import interpolation, targets
from hgcal_jax.data import pipeline, records, shards
from hgcal_jax.geometry import synthetic
from hgcal_jax.interpolation import operator

SPEC = pipeline.PipelineSpec(batch_size=8, max_hits=64, seed=3)
TARGETS = targets.TargetSpec(names=("energy", "impact_x", "impact_y", "eta"))


def produce(task):
    rng = np.random.default_rng(task.seed)
    for i in range(task.n_events):
        n = int(rng.integers(5, 120))  # some events exceed max_hits = 64
        zside = int(rng.choice([1, -1]))
        yield records.make_event(rng.choice(20000, n, replace=False), rng.exponential(5.0, n),
                                 {"event_id": task.first_event_id + i, "energy": rng.uniform(10, 200),
                                  "eta": zside * rng.uniform(1.6, 2.8), "zside": zside,
                                  "impact_x": rng.normal(0, 50), "impact_y": rng.normal(0, 50)})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ds")
    tasks = shards.plan({"train": 50, "val": 21}, 20, seed=0)
    meta = shards.write_dataset(directory, tasks, produce, {"geometry_hash": "g"}, progress=False)
    return directory, meta


def batches(it, n):
    return [next(it) for _ in range(n)]


def assert_same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_same_seed_same_batches_other_seed_other(dataset):
    directory, meta = dataset
    paths, _ = shards.open_split(directory, "train")
    make = lambda spec: iter(pipeline.train_dataset(paths, spec, TARGETS, meta["target_stats"]))  # noqa: E731
    a, b = batches(make(SPEC), 12), batches(make(SPEC), 12)
    assert_same(a, b)
    c = batches(make(dataclasses.replace(SPEC, seed=4)), 12)
    assert not np.array_equal(a[0]["event_id"], c[0]["event_id"])
    # 12 batches of 8 cover 96 examples: the first 50 are one full permutation of the split.
    ids = np.concatenate([x["event_id"] for x in a])
    assert sorted(ids[:48]) == sorted(set(ids[:48])) and set(ids[:50]) <= set(range(50))


def test_device_iterator_restores_exactly(dataset):
    directory, meta = dataset
    paths, _ = shards.open_split(directory, "train")
    sharding = jax.sharding.NamedSharding(jax.make_mesh((1,), ("data",)), jax.sharding.PartitionSpec("data"))
    make = lambda: pipeline.DeviceIterator(  # noqa: E731
        iter(pipeline.train_dataset(paths, SPEC, TARGETS, meta["target_stats"])), sharding)
    straight = batches(make(), 10)
    first = make()
    batches(first, 4)
    state = first.get_state()  # taken with a batch already in flight
    resumed = make()
    resumed.set_state(state)
    assert_same(straight[4:], batches(resumed, 6))
    assert isinstance(straight[0]["cells"], jax.Array) and isinstance(straight[0]["event_id"], np.ndarray)


def test_eval_yields_each_example_once_with_weights(dataset):
    directory, meta = dataset
    paths, _ = shards.open_split(directory, "val")
    ds = pipeline.eval_dataset(paths, SPEC, TARGETS, meta["target_stats"])
    out = list(ds)
    assert len(out) == 3 and all(len(b["weight"]) == 8 for b in out)
    weights = np.concatenate([b["weight"] for b in out])
    ids = np.concatenate([b["event_id"] for b in out])[weights > 0]
    assert weights.sum() == 21 and sorted(ids) == list(range(50, 71))
    padded = out[-1]
    assert not padded["mask"][padded["weight"] == 0].any()


def test_process_slices_are_disjoint_and_complete(dataset):
    directory, meta = dataset
    paths, _ = shards.open_split(directory, "val")
    seen = []
    lengths = set()
    for index in range(3):
        spec = dataclasses.replace(SPEC, batch_size=6)
        ds = list(pipeline.eval_dataset(paths, spec, TARGETS, meta["target_stats"], index, 3))
        lengths.add(len(ds))
        for b in ds:
            seen.extend(b["event_id"][b["weight"] > 0].tolist())
        train = iter(pipeline.train_dataset(paths, spec, TARGETS, meta["target_stats"], index, 3))
        ids = set(np.concatenate([b["event_id"] for b in batches(train, 7)]).tolist())
        assert ids == {50 + i for i in range(index, 21, 3)}  # the process's own slice, all of it
    assert sorted(seen) == list(range(50, 71)) and len(lengths) == 1


def test_truncation_keeps_the_most_energetic_hits_and_counts(dataset):
    directory, meta = dataset
    paths, _ = shards.open_split(directory, "train")
    events = {e.event_id: e for e in shards.iter_events(paths)}
    parse = pipeline.ParseEvent(64, TARGETS, meta["target_stats"])
    for event in events.values():
        ex = parse.map(records.serialize(event))
        n = len(event.cells)
        assert ex["n_hits"] == n and ex["truncated"] == max(0, n - 64)
        kept = ex["energies"][ex["mask"]]
        if n > 64:
            assert kept.min() >= np.sort(event.energies)[-64]
        np.testing.assert_allclose(np.sort(kept), np.sort(event.energies)[-min(n, 64):])
    assert any(len(e.cells) > 64 for e in events.values())


def test_minus_z_record_equals_its_plus_z_twin():
    geometry = synthetic.build(synthetic.SyntheticSpec(layers=(1, 2, 10), phi_min_deg=0, phi_max_deg=20))
    plus_cells = np.flatnonzero(geometry.zside == 1)[:: 97][:50]
    minus_cells = geometry.index_of(geometry.id[plus_cells] ^ (1 << 24))
    energies = np.random.default_rng(0).exponential(3.0, len(plus_cells))
    truth = {"event_id": 1, "energy": 50.0, "eta": 2.1, "zside": 1, "impact_x": 30.0,
             "impact_y": 12.0, "impact_z": 333.0, "phi": 0.38}
    twin = {**truth, "eta": -2.1, "zside": -1, "impact_z": -333.0}
    stats = {k: {"mean": 0.0, "std": 1.0} for k in ("log_energy", "impact_x", "impact_y", "eta")}
    parse = pipeline.ParseEvent(64, TARGETS, stats)
    a = parse.map(records.serialize(records.make_event(plus_cells, energies, truth)))
    b = parse.map(records.serialize(records.make_event(minus_cells, energies, twin)))
    np.testing.assert_array_equal(a["targets"], b["targets"])
    np.testing.assert_array_equal(list(a["truth"].values()), list(b["truth"].values()))  # NaN-aware
    assert a["truth"].keys() == b["truth"].keys() and (a["zside"], b["zside"]) == (1, -1)
    tab = operator.DeviceTable.from_table(interpolation.build(geometry, interpolation.Grid.full(geometry)))
    images = [operator.interpolate(tab, x["cells"][None], x["energies"][None], x["mask"][None]).image
              for x in (a, b)]
    np.testing.assert_array_equal(np.asarray(images[0]), np.asarray(images[1]))


def test_worker_processes_give_the_same_batches(dataset):
    directory, meta = dataset
    paths, _ = shards.open_split(directory, "train")
    inline = batches(iter(pipeline.train_dataset(paths, SPEC, TARGETS, meta["target_stats"])), 5)
    it = iter(pipeline.train_dataset(paths, dataclasses.replace(SPEC, workers=2), TARGETS,
                                     meta["target_stats"]))
    try:
        assert_same(inline, batches(it, 5))
    finally:
        it.close() if hasattr(it, "close") else None


def test_max_hits_cut_keeps_the_most_energetic_hits_and_the_stats_follow_it(dataset):
    energies = np.array([0.5, 3.0, 0.1, 2.0, 7.0, 0.2])
    np.testing.assert_array_equal(pipeline.kept_hits(energies, 3), [1, 3, 4])  # cell order
    np.testing.assert_array_equal(pipeline.kept_hits(energies, 10), np.arange(6))
    from hgcal_jax import train

    directory, _ = dataset
    paths, _ = shards.open_split(directory, "train")
    weight = np.ones(1 + max(int(e.cells.max()) for e in shards.iter_events(paths) if len(e.cells)))
    events = list(shards.iter_events(paths))
    raw = [max(np.sort(e.energies)[::-1][:5].sum(), 1e-6) for e in events]
    stats = train.derived_stats(paths, weight, max_hits=5)
    assert stats["log_raw_energy"]["mean"] == pytest.approx(np.mean(np.log(raw)), rel=1e-6)
    assert train.derived_stats(paths, weight, max_hits=10**6)["log_raw_energy"]["mean"] > \
        stats["log_raw_energy"]["mean"]
