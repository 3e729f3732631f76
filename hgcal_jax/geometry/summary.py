"""A human-readable summary of a `Geometry`: what a physicist checks first."""

from __future__ import annotations

import numpy as np

from hgcal_jax.geometry import types


def summary(geometry: types.Geometry, content_hash: str | None = None) -> str:
    """Cells per layer and endcap, cell types, extents and build time, as a text table."""
    g = geometry
    lines = [f"Geometry ({g.source}): {len(g):,} cells, {len(g.layers())} layers, "
             f"endcaps {', '.join('+z' if s > 0 else '-z' for s in sorted(g.zsides(), reverse=True))}"]
    if content_hash:
        lines.append(f"  content hash {content_hash}")
    if "build_s" in g.params:
        lines.append(f"  build time {g.params['build_s']:.2f} s")
    types_count = np.bincount(g.cell_type, minlength=3)
    lines.append("  cell types: " + ", ".join(
        f"{name} {types_count[k]:,}" for k, name in types.CELL_TYPE_NAMES.items()))
    lines.append(f"  wafers: {len(np.unique(g.wafer)):,} positions; fine (small-cell) cells "
                 f"{int((g.wafer_type == types.FINE).sum()):,}")
    r = np.hypot(g.x, g.y)
    lines.append(f"  extent: x [{g.x.min():.2f}, {g.x.max():.2f}] cm, y [{g.y.min():.2f}, "
                 f"{g.y.max():.2f}] cm, r [{r.min():.2f}, {r.max():.2f}] cm, "
                 f"|z| [{np.abs(g.z).min():.3f}, {np.abs(g.z).max():.3f}] cm")
    lines.append(f"  {'layer':>5} {'z (cm)':>9} {'cells +z':>10} {'cells -z':>10} "
                 f"{'r min':>7} {'r max':>7}")
    layer_z = g.layer_z()
    counts = {s: np.bincount(g.layer[g.zside == s], minlength=g.layer.max() + 1)
              for s in (1, -1)}
    r_min = np.full(g.layer.max() + 1, np.inf)
    r_max = np.zeros(g.layer.max() + 1)
    np.minimum.at(r_min, g.layer, r)
    np.maximum.at(r_max, g.layer, r)
    for layer in g.layers():
        z = layer_z.get((1, layer), -layer_z.get((-1, layer), np.nan))
        lines.append(f"  {layer:>5} {z:>9.3f} {counts[1][layer]:>10,} {counts[-1][layer]:>10,} "
                     f"{r_min[layer]:>7.1f} {r_max[layer]:>7.1f}")
    return "\n".join(lines)
