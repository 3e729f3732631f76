"""Interpolation benchmark: table build vs the 2018 shapely algorithm, operator vs scipy CSR.

  python benchmarks/interpolation.py --json runs/bench/interpolation.json
  python benchmarks/interpolation.py --layers 1-2 --batches 2   # a quick run on a small geometry

Measured in one run on the same machine:
- table_build_s: exact overlap table of the full 2-endcap synthetic geometry on the full grid;
- shapely_reference_s: the 2018 algorithm (KD-tree of pixel centres for candidate pixels, then one
  shapely intersection per candidate), timed on `--shapely-cells` cells and scaled to all cells;
- operator_events_per_s_{full,window}: the jitted operator on batches of 32 toy showers with
  realistic hit counts (~1,300-2,100 hits);
- scipy_csr_events_per_s_full: the same operator as a scipy.sparse CSR matrix (cells x pixels),
  multiplied by the same events as a sparse (events x cells) matrix and densified into the same
  (B, H, W, L) float32 images that the jitted operator returns.
"""

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import scipy.sparse
import scipy.spatial

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hgcal_jax import interpolation  # noqa: E402
from hgcal_jax.geometry import sources, synthetic  # noqa: E402
from hgcal_jax.interpolation import operator, table, testing  # noqa: E402


def shapely_reference_s(geometry, grid, n_cells: int, rng) -> float:
    """The 2018 algorithm on a sample of cells, in seconds per cell."""
    import shapely

    picks = rng.choice(len(geometry), n_cells, replace=False)
    xs, ys = grid.pixel_centers()
    centers = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    start = time.perf_counter()
    tree = scipy.spatial.cKDTree(centers)
    verts, count = geometry.polygons(picks)
    half = grid.pixel_cm / 2
    radius = 0.8 + grid.pixel_cm  # cell circumradius + pixel half-diagonal, generously
    for n, c in enumerate(picks):
        cell = shapely.Polygon(verts[n, : count[n]])
        for p in tree.query_ball_point(geometry.center[c, :2], radius):
            x, y = centers[p]
            cell.intersection(shapely.box(x - half, y - half, x + half, y + half)).area  # noqa: B018
    return (time.perf_counter() - start) / n_cells


def csr_operator(tab) -> scipy.sparse.csr_matrix:
    """The table as a (cells x H*W*L) CSR matrix."""
    grid = tab.grid
    n, k = tab.weight.shape
    cols = (tab.iy.astype(np.int64) * grid.nx + tab.ix) * grid.n_layers + tab.layer_index[:, None]
    return scipy.sparse.csr_matrix((tab.weight.ravel(), cols.ravel(), np.arange(0, n * k + 1, k)),
                                   shape=(n, grid.ny * grid.nx * grid.n_layers))


def time_batches(fn, batches) -> float:
    fn(*batches[0])  # compile / warm up
    start = time.perf_counter()
    for b in batches:
        fn(*b)
    return sum(len(b[0]) for b in batches) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--layers", default="1-40")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--max-hits", type=int, default=2048)
    parser.add_argument("--shapely-cells", type=int, default=3000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    geometry = synthetic.build(synthetic.SyntheticSpec(layers=sources.parse_layers(args.layers, 40)))
    grid = interpolation.Grid.full(geometry)
    start = time.perf_counter()
    tab = table.build(geometry, grid)
    build_s = time.perf_counter() - start
    per_cell = shapely_reference_s(geometry, grid, args.shapely_cells, rng)
    shapely_s = per_cell * len(geometry)

    showers = testing.ToyShowers(geometry)
    batches = [showers.batch(rng, args.batch, args.max_hits) for _ in range(args.batches)]
    hits = float(np.mean([b[2].sum(1).mean() for b in batches]))

    full = operator.DeviceTable.from_table(tab)
    window = operator.DeviceTable.from_table(tab, window=32)
    def runner(dev):
        buffer = [jax.numpy.zeros((args.batch, *dev.grid.image_shape), jax.numpy.float32)]

        def run(c, e, m):
            # The donated buffer is overwritten in place (see operator.interpolate_into).
            buffer[0] = operator.interpolate_into(buffer[0], dev, c, e, m).image
            return buffer[0].block_until_ready()

        return run

    op_full = time_batches(runner(full), batches)
    op_window = time_batches(runner(window), batches)
    op_full_alloc = time_batches(
        lambda c, e, m: operator.interpolate(full, c, e, m).image.block_until_ready(), batches)

    matrix = csr_operator(tab)
    shape = (args.batch, *grid.image_shape)

    def run_csr(c, e, m):
        events = scipy.sparse.csr_matrix((e[m], c[m], np.concatenate([[0], np.cumsum(m.sum(1))])),
                                         shape=(len(c), matrix.shape[0]))
        return (events @ matrix).toarray().reshape(shape)

    csr_full = time_batches(run_csr, batches)
    common.write_json(args.json, {
        "cells": len(geometry),
        "grid": f"{grid.ny} x {grid.nx} x {grid.n_layers} at {grid.pixel_cm} cm",
        "table_k": tab.k,
        "table_build_s": round(build_s, 2),
        "shapely_reference_s": round(shapely_s, 1),
        "shapely_reference_note": f"timed on {args.shapely_cells} random cells, scaled to {len(geometry)}",
        "table_speedup_vs_shapely": round(shapely_s / build_s, 1),
        "mean_hits_per_event": round(hits, 1),
        "batch": args.batch,
        "operator_events_per_s_full": round(op_full, 1),
        "operator_events_per_s_full_fresh_buffer": round(op_full_alloc, 1),
        "scipy_csr_events_per_s_full": round(csr_full, 1),
        "operator_vs_scipy_full": round(op_full / csr_full, 2),
        "operator_events_per_s_window": round(op_window, 1),
        "jax_backend": jax.default_backend(),
        "machine": common.machine(),
    })


if __name__ == "__main__":
    main()
