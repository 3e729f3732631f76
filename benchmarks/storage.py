"""Storage benchmark: sparse ArrayRecord events vs the 2018 dense ZLIB images, and write speed.

  python benchmarks/storage.py --json runs/bench/storage.json

Measured in one run, on the same simulated events (default config mix: e-, e+, photons,
10-200 GeV log-uniform, nuisances on):
- bytes_per_event_sparse: our shard on disk (delta-coded cells, byte-shuffled float32 MIPs,
  zstd, group_size 1) divided by the events in it; lossless;
- bytes_per_event_sparse_raw_encoding: the same records with plain int32/float32 arrays, to show
  what the delta coding and byte shuffling buy under zstd;
- bytes_per_event_dense_zlib: the 2018 format, each event's full-detector float32 image
  (H x W x 40 at 0.7 cm) ZLIB-compressed (level 6, TFRecord's default), on --dense-events events;
- simulate_events_per_s: 50 GeV electrons, one process; write_events_per_s: serialize + write.
"""

import argparse
import dataclasses
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from array_record.python import array_record_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hgcal_jax import interpolation  # noqa: E402
from hgcal_jax.data import records, shards  # noqa: E402
from hgcal_jax.geometry import synthetic  # noqa: E402
from hgcal_jax.interpolation import operator, table  # noqa: E402
from hgcal_jax.simulation import simulator  # noqa: E402
from hgcal_jax.simulation.spec import SimulationSpec  # noqa: E402


def raw_bytes(event: records.Event) -> bytes:
    return event.cells.astype("<i4").tobytes() + event.energies.astype("<f4").tobytes()


def shard_size(path: Path, blobs) -> int:
    writer = array_record_module.ArrayRecordWriter(str(path), shards.WRITER_OPTIONS)
    for blob in blobs:
        writer.write(blob)
    writer.close()
    return path.stat().st_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--dense-events", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    geometry = synthetic.build()
    sim = simulator.Simulator(geometry, SimulationSpec())
    events = [sim.event(rng, i) for i in range(args.events)]
    hits = np.mean([len(e.cells) for e in events])

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        n, _ = shards.write_shard(Path(tmp) / "a.arrayrecord", events)
        write_s = time.perf_counter() - start
        sparse = (Path(tmp) / "a.arrayrecord").stat().st_size / n
        raw = shard_size(Path(tmp) / "raw.arrayrecord", [raw_bytes(e) for e in events]) / n
        uncompressed = np.mean([len(records.serialize(e)) for e in events])

    fixed = dataclasses.replace(SimulationSpec(), particles=("e-",), energy_spectrum="fixed",
                                energy_min=50.0, energy_max=50.0)
    sim.spec = fixed
    start = time.perf_counter()
    for i in range(500):
        sim.event(rng, i)
    sim_rate = 500 / (time.perf_counter() - start)

    grid = interpolation.Grid.full(geometry)
    dev = operator.DeviceTable.from_table(table.build(geometry, grid))
    dense = []
    for e in events[: args.dense_events]:
        image = operator.interpolate(dev, e.cells[None], e.energies[None], np.ones((1, len(e.cells)), bool))
        dense.append(len(zlib.compress(np.asarray(image.image[0]).tobytes(), 6)))
    dense_mean = float(np.mean(dense))
    common.write_json(args.json, {
        "events": n,
        "mean_hits_per_event": round(float(hits), 1),
        "bytes_per_event_sparse": round(sparse, 1),
        "bytes_per_event_sparse_raw_encoding": round(raw, 1),
        "bytes_per_event_uncompressed_record": round(float(uncompressed), 1),
        "zstd_ratio_record_encoding": round(float(uncompressed) / sparse, 2),
        "zstd_ratio_raw_encoding": round(float(uncompressed) / raw, 2),
        "dense_image": f"{grid.ny} x {grid.nx} x {grid.n_layers} float32 "
                       f"({grid.ny * grid.nx * grid.n_layers * 4 / 1e6:.1f} MB raw)",
        "bytes_per_event_dense_zlib": round(dense_mean, 1),
        "dense_events_measured": len(dense),
        "dense_over_sparse": round(dense_mean / sparse, 1),
        "simulate_events_per_s": round(sim_rate, 1),
        "simulate_note": "50 GeV electrons, one process, full 2-endcap geometry",
        "write_events_per_s": round(n / write_s, 1),
        "machine": common.machine(),
    })


if __name__ == "__main__":
    main()
