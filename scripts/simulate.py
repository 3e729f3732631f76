"""Simulates the train/val/test event shards of a config's dataset (resumable).

  python scripts/simulate.py --config configs/default.py --geometry runs/demo/geometry.npz
  python scripts/simulate.py --config configs/default.py:smoke --config.data.dir=/tmp/smoke_data
  python scripts/simulate.py --config configs/default.py --config.simulation.upstream=False \
      --config.data.dir=runs/no_upstream --config.data.workers=2

Writes `{split}-{i:05d}-of-{n:05d}.arrayrecord` shards and meta.json into config.data.dir. An
interrupted run is resumed by running the same command: complete shards are kept. Without
--geometry the geometry is built from the config and saved into the data directory.
"""

import os
from pathlib import Path

from absl import flags

from hgcal_jax import cli
from hgcal_jax.geometry import io, sources
from hgcal_jax.simulation import simulator
from hgcal_jax.simulation.spec import SimulationSpec

_GEOMETRY = flags.DEFINE_string("geometry", "", "Geometry .npz (default: build it from the config).")


def main(argv):
    del argv
    config = cli.config()
    data = config.data
    geometry_path = _GEOMETRY.value
    if not geometry_path:
        # Built from the config every time (seconds), so a stale file is never reused.
        geometry = sources.from_config(config.geometry)
        geometry_path = str(Path(data.dir) / "geometry.npz")
        if not Path(geometry_path).is_file() or io.stored_hash(geometry_path) != io.content_hash(geometry):
            io.save(geometry, geometry_path)
    workers = data.workers or max(1, (os.cpu_count() or 2) // 2)
    meta = simulator.simulate_dataset(
        geometry_path, SimulationSpec.from_config(config.simulation), data.dir,
        {"train": data.train_events, "val": data.val_events, "test": data.test_events},
        data.events_per_shard, config.seed if data.simulation_seed < 0 else data.simulation_seed,
        workers=workers)
    for split, info in meta["splits"].items():
        mb = sum(s["bytes"] for s in info["shards"]) / 1e6
        print(f"{split:>5}: {info['events']:>7,} events in {len(info['shards'])} shards, {mb:.1f} MB")
    print(f"geometry {meta['geometry_hash']}, written at {meta['write_events_per_s']} events/s "
          f"-> {data.dir}/meta.json")


if __name__ == "__main__":
    cli.run(main)
