"""GPU benchmark: train the window and full-detector configs for a fixed number of steps.

  bash benchmarks/gpu.sh                     # on the GPU machine (see gpu.sh)
  python benchmarks/gpu.py --dry-run --json /tmp/gpu.json   # tiny sizes, any CPU (tested)

Prints and writes, per config: events/s, step time, compile time, peak device memory; and the
interpolation operator's full-detector throughput against the memory-bandwidth floor (the time
to write the float32 images once at the device's peak bandwidth: the operator cannot beat it).
Everything is simulated on the spot (no network, no dataset needed).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

from hgcal_jax import cli, interpolation, optim, train  # noqa: E402
from hgcal_jax.geometry import io, sources  # noqa: E402
from hgcal_jax.interpolation import operator, testing  # noqa: E402
from hgcal_jax.simulation import simulator  # noqa: E402
from hgcal_jax.simulation.spec import SimulationSpec  # noqa: E402

# Peak memory bandwidth (bytes/s) by device kind, for the floor; unknown devices get none.
BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12}


def peak_memory_mb() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    value = stats.get("peak_bytes_in_use")
    return round(value / 2**20, 1) if value else None


def bench_config(name: str, data_dir: str, cache_dir: str, steps: int, batch: int | None) -> dict:
    config = cli.load(str(REPO / "configs" / name))
    config.data.dir, config.interpolation.cache_dir = data_dir, cache_dir
    if batch:
        config.data.batch_size = batch
    setup = train.Setup(config)
    tx, schedule = optim.make(config.optim, 1000)
    graphdef, state = train.initial_state(setup, tx)
    train_fn, _ = train.jit_steps(setup, graphdef, tx, schedule)
    it = setup.train_iterator()
    batches = [next(it) for _ in range(4)]
    it.close()
    for b in batches:
        b.pop("event_id")
    key = jax.device_put(jax.random.key(0), setup.repl)
    start = time.perf_counter()
    state, metrics = train_fn(state, batches[0], setup.table, setup.cell_weight, key)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(steps):
        state, metrics = train_fn(state, batches[i % 4], setup.table, setup.cell_weight, key)
    jax.block_until_ready(metrics)
    dt = time.perf_counter() - start
    return {"config": name, "image": list(setup.grid.image_shape), "batch": config.data.batch_size,
            "steps": steps, "events_per_s": round(steps * config.data.batch_size / dt, 1),
            "step_ms": round(1000 * dt / steps, 2), "compile_s": round(compile_s, 1),
            "loss": float(metrics["loss"]), "peak_device_memory_mb": peak_memory_mb()}


def bench_operator(geometry, table, batch: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    showers = testing.ToyShowers(geometry)
    cells, energies, mask = showers.batch(rng, batch, 2048)
    dev = operator.DeviceTable.from_table(table)
    buffer = jax.numpy.zeros((batch, *dev.grid.image_shape), jax.numpy.float32)
    buffer = operator.interpolate_into(buffer, dev, cells, energies, mask).image
    buffer.block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        buffer = operator.interpolate_into(buffer, dev, cells, energies, mask).image
    buffer.block_until_ready()
    dt = (time.perf_counter() - start) / repeats
    image_bytes = buffer.size * 4
    kind = jax.devices()[0].device_kind
    bandwidth = next((v for k, v in BANDWIDTH.items() if k in kind), None)
    floor = image_bytes / bandwidth if bandwidth else None
    return {"batch": batch, "image_mb_per_batch": round(image_bytes / 2**20, 1),
            "events_per_s": round(batch / dt, 1), "batch_ms": round(1000 * dt, 3),
            "bandwidth_floor_ms": round(1000 * floor, 3) if floor else None,
            "fraction_of_floor": round(floor / dt, 3) if floor else None,
            "device_kind": kind}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes, for a CPU")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    dry = args.dry_run
    geometry_config = cli.load(str(REPO / "configs" / ("default.py:smoke" if dry else "default.py")))
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        geometry = sources.from_config(geometry_config.geometry)
        io.save(geometry, Path(tmp) / "geometry.npz")
        n_train = 64 if dry else 2048
        simulator.simulate_dataset(str(Path(tmp) / "geometry.npz"),
                                   SimulationSpec.from_config(geometry_config.simulation), tmp,
                                   {"train": n_train, "val": 16, "test": 0}, 512, 0,
                                   workers=1 if dry else min(8, os.cpu_count() or 1), progress=False)
        steps = 3 if dry else args.steps
        runs = [bench_config("default.py:smoke" if dry else "default.py", tmp, tmp, steps, None),
                bench_config("full_detector.py:smoke" if dry else "full_detector.py", tmp, tmp,
                             steps, None)]
        grid = interpolation.Grid.full(geometry)
        table = interpolation.load_or_build(geometry, grid, tmp, progress=False)
        op = bench_operator(geometry, table, 4 if dry else 32, 2 if dry else 20)
    result = {"dry_run": dry, "devices": [str(d) for d in jax.devices()], "train": runs,
              "operator_full": op, "total_s": round(time.perf_counter() - start, 1),
              "machine": common.machine()}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
