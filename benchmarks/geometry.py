"""Builds the full 2-endcap synthetic geometry and reports time, size and peak memory.

  python benchmarks/geometry.py --json runs/bench/geometry.json

Goal (issue 2): under 30 s and 2 GB on 2 cores. The baseline printed beside it is the same
build done cell by cell with shapely (the 2018 way: one polygon object per cell), timed on one
layer and scaled by cell count, measured in the same run.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hgcal_jax.geometry import io, polygons, synthetic  # noqa: E402


def shapely_layer_build_s(n_max: int = 20_000) -> tuple[float, int]:
    """Per-cell shapely hexagon clipping to the wafer, as a loop: the baseline."""
    import shapely

    fine_side = synthetic.LARGE_CELL_SIDE
    wafer = shapely.Polygon(polygons.regular_hexagons(np.zeros((1, 2)),
                                                      synthetic.WAFER_FLAT_TO_FLAT / np.sqrt(3))[0][0])
    verts, _ = polygons.regular_hexagons(np.random.default_rng(0).uniform(-6, 6, (n_max, 2)),
                                         fine_side)
    start = time.perf_counter()
    for v in verts:
        shapely.Polygon(v).intersection(wafer).area  # noqa: B018
    return time.perf_counter() - start, n_max


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    start = time.perf_counter()
    geometry = synthetic.build()
    build_s = time.perf_counter() - start
    build_rss_mb = common.peak_rss_mb()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        io.save(geometry, Path(tmp) / "g.npz")
        save_s = time.perf_counter() - start
        size_mb = (Path(tmp) / "g.npz").stat().st_size / 1e6
        start = time.perf_counter()
        io.load(Path(tmp) / "g.npz")
        load_s = time.perf_counter() - start
    baseline_s, baseline_n = shapely_layer_build_s()
    baseline_full_s = baseline_s * len(geometry) / baseline_n
    common.write_json(args.json, {
        "synthetic_build_s": round(build_s, 3),
        "cells_total": len(geometry),
        "peak_rss_mb": round(build_rss_mb, 1),
        "peak_rss_mb_incl_save_load": round(common.peak_rss_mb(), 1),
        "save_s": round(save_s, 3),
        "load_verify_s": round(load_s, 3),
        "npz_mb": round(size_mb, 1),
        "shapely_loop_build_s_scaled": round(baseline_full_s, 1),
        "speedup_vs_shapely_loop": round(baseline_full_s / build_s, 1),
        "machine": common.machine(),
    })


if __name__ == "__main__":
    main()
