"""Builds (or finds in the cache) the interpolation table of a geometry and checks it.

  python scripts/make_table.py --config configs/default.py --geometry runs/demo/geometry.npz
  python scripts/make_table.py --config configs/default.py:smoke --config.interpolation.pixel_cm=0.5

Without --geometry the geometry is built from the config. Prints the grid, K (pixels per cell),
the per-layer surface check (stored overlap area / cell area) and the cache file.
"""

import time

import numpy as np
from absl import flags

from hgcal_jax import cli, interpolation
from hgcal_jax.geometry import io, sources
from hgcal_jax.interpolation import table

_GEOMETRY = flags.DEFINE_string("geometry", "", "Geometry .npz (default: build it from the config).")


def main(argv):
    del argv
    config = cli.config()
    geometry = io.load(_GEOMETRY.value) if _GEOMETRY.value else sources.from_config(config.geometry)
    grid = interpolation.Grid.full(geometry, pixel_cm=config.interpolation.pixel_cm,
                                   window=config.interpolation.window)
    start = time.perf_counter()
    tab = table.load_or_build(geometry, grid, config.interpolation.cache_dir)
    elapsed = time.perf_counter() - start
    path = table.cache_path(config.interpolation.cache_dir, tab.geometry_hash, grid)
    print(f"interpolation table {path} ({elapsed:.1f} s): {len(tab):,} cells, K = {tab.k}")
    print(f"  full grid {grid.ny} x {grid.nx} pixels of {grid.pixel_cm} cm x {grid.n_layers} layers; "
          f"images {'x'.join(map(str, grid.image_shape))} (H x W x L)")
    covered = (tab.weight.astype(np.float64) * tab.cell_area[:, None]).sum(1)
    ratio = covered.sum() / tab.cell_area.sum()
    worst = np.abs(tab.weight.sum(1, dtype=np.float64) - 1).max()
    print(f"  surface check: stored overlap / cell area = {ratio:.9f}; "
          f"worst per-cell |sum(w) - 1| = {worst:.2e}")


if __name__ == "__main__":
    cli.run(main)
