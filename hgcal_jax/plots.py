"""Figures of showers, of attributions and of the geometry, one function per figure.

Event display (`event_display`: a layer's real hexagonal cells beside its interpolated square
image), the layer-by-layer "brain scan" (`layer_animation`: GIF and a self-contained HTML with a
slider), 3D hits (`hits_3d`), saliency figures (`layer_profile`, `layer_heatmaps`, `cell_map`) and
geometry QA (`grid_overlap`: cells over the pixels they overlap; `coverage_map`: the covered
fraction of every pixel).

Figures are built on `matplotlib.figure.Figure` without pyplot, so no global backend or figure
state is touched (Agg renders the files). A PNG is figsize x DPI pixels, exactly (no tight bbox).
Units everywhere: positions in cm, energies in the dataset's unit (MIP or GeV, `unit=`), layers
by their global number; images are (H = y rows, W = x columns, L) with rows drawn upwards.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib import colors
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from PIL import Image

from hgcal_jax.geometry import types
from hgcal_jax.interpolation.grid import Grid
from hgcal_jax.interpolation.table import InterpolationTable

DPI = 100
FIGSIZES = {"event_display": (11.0, 4.8), "layer_profile": (7.0, 5.0), "layer_heatmaps": (12.0, 6.0),
            "cell_map": (6.4, 5.2), "layer_animation": (5.2, 4.6), "hits_3d": (7.0, 5.6),
            "coverage_map": (6.4, 5.6), "grid_overlap": (6.4, 6.0)}
PARTICLES = {11: "e-", -11: "e+", 22: "γ", 13: "μ-", -13: "μ+", 211: "π+", -211: "π-", 111: "π0",
             130: "K0L", 2212: "p", 2112: "n"}
ENERGY_CMAP = matplotlib.colormaps["viridis"].with_extremes(bad="white", under="white")
SIGNED_CMAP = matplotlib.colormaps["RdBu_r"]


def event_title(truth: Mapping, event_id: int | None = None) -> str:
    """'e- 52.3 GeV, η = 2.10, φ = 0.25 rad (event 17)' from a truth dict (records.TRUTH_FIELDS)."""
    pid = int(truth.get("pid", 0))
    text = (f"{PARTICLES.get(pid, f'pid {pid}')} {float(truth['energy']):.1f} GeV, "
            f"η = {float(truth['eta']):.2f}, φ = {float(truth['phi']):.2f} rad")
    event_id = truth.get("event_id") if event_id is None else event_id
    return text + (f" (event {int(event_id)})" if event_id is not None else "")


def image_extent(grid: Grid, origin_cm: Sequence[float]) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) in cm of an image whose lower-left corner is `origin_cm`."""
    h, w, _ = grid.image_shape
    x0, y0 = float(origin_cm[0]), float(origin_cm[1])
    return x0, x0 + w * grid.pixel_cm, y0, y0 + h * grid.pixel_cm


def energy_norm(values: np.ndarray) -> colors.LogNorm:
    """Log scale over three decades below the maximum (noise-level cells stay visible)."""
    top = max(float(np.max(values, initial=0.0)), 1e-6)
    return colors.LogNorm(vmin=top * 1e-3, vmax=top)


def signed_norm(values: np.ndarray) -> colors.Normalize:
    """A scale symmetric about 0, so white means no attribution in either direction."""
    top = max(float(np.max(np.abs(values), initial=0.0)), 1e-12)
    return colors.Normalize(vmin=-top, vmax=top)


def _new(name: str, figsize=None) -> Figure:
    # Constrained layout keeps colour-bar labels off the neighbouring panel at a fixed figure size.
    return Figure(figsize=figsize or FIGSIZES[name], dpi=DPI, layout="constrained")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _polygons(geometry: types.Geometry, index: np.ndarray) -> list[np.ndarray]:
    verts, count = geometry.polygons(index)
    return [v[:c] for v, c in zip(verts, count, strict=True)]


def _cells_in_view(geometry: types.Geometry, layer: int, zside: int, extent, margin: float = 1.0):
    x, y = geometry.x, geometry.y
    return np.flatnonzero((geometry.layer == layer) & (geometry.zside == zside)
                          & (x > extent[0] - margin) & (x < extent[1] + margin)
                          & (y > extent[2] - margin) & (y < extent[3] + margin))


def _draw_cells(ax, geometry, cells, values, norm, cmap, layer: int, extent) -> PolyCollection:
    """The event's cells of `layer` filled by value over the outlines of every cell in view."""
    zside = int(geometry.zside[cells[0]]) if len(cells) else 1
    context = _cells_in_view(geometry, layer, zside, extent)
    ax.add_collection(PolyCollection(_polygons(geometry, context), facecolors="none",
                                     edgecolors="0.8", linewidths=0.3))
    on = geometry.layer[cells] == layer
    filled = PolyCollection(_polygons(geometry, cells[on]), array=np.asarray(values)[on], norm=norm,
                            cmap=cmap, edgecolors="0.4", linewidths=0.2)
    ax.add_collection(filled)
    _frame(ax, extent)
    return filled


def _frame(ax, extent) -> None:
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_aspect("equal")
    ax.set_xlabel("x (cm)")
    ax.set_ylabel("y (cm)")


def shower_layer(grid: Grid, image_HxWxL: np.ndarray) -> int:
    """Global number of the layer holding the most energy (shower maximum)."""
    return int(grid.layers[int(np.argmax(np.asarray(image_HxWxL).sum(axis=(0, 1))))])


def shower_view(geometry: types.Geometry, cells: np.ndarray, energies: np.ndarray,
                half_width_cm: float | None = None) -> tuple[float, float, float, float]:
    """A square view around the energy-weighted centroid of the hits: `half_width_cm`, or three
    energy-weighted RMS radii clipped to [4, 15] cm (stray noise hits, being faint, hardly widen it)."""
    w = np.maximum(energies, 0.0) + 1e-12
    x, y = geometry.x[cells], geometry.y[cells]
    cx, cy = np.average(x, weights=w), np.average(y, weights=w)
    if half_width_cm is None:
        rms = np.sqrt(np.average((x - cx) ** 2 + (y - cy) ** 2, weights=w))
        half_width_cm = float(np.clip(3.0 * rms, 4.0, 15.0))
    return cx - half_width_cm, cx + half_width_cm, cy - half_width_cm, cy + half_width_cm


def event_display(geometry: types.Geometry, cells: np.ndarray, energies: np.ndarray,
                  image_HxWxL: np.ndarray, grid: Grid, origin_cm, *, path: str | Path,
                  layer: int | None = None, unit: str = "MIP", title: str = "", figsize=None) -> Path:
    """Left: the layer's hit cells (true polygons, log colour scale); right: the same layer of the
    interpolated image. The view is the shower window (or 30 cm around the hits, full grid)."""
    layer = shower_layer(grid, image_HxWxL) if layer is None else layer
    if layer not in grid.layers:
        raise ValueError(f"layer {layer} is not in the image (layers {grid.layers[0]}-{grid.layers[-1]})")
    extent = image_extent(grid, origin_cm)
    view = extent if grid.window else shower_view(geometry, cells, energies, 15.0)
    plane = np.asarray(image_HxWxL)[..., list(grid.layers).index(layer)]
    fig = _new("event_display", figsize)
    left, right = fig.subplots(1, 2)
    on = geometry.layer[cells] == layer
    poly = _draw_cells(left, geometry, cells, energies, energy_norm(energies[on]), ENERGY_CMAP, layer, view)
    left.set_title(f"hexagonal cells, layer {layer}")
    fig.colorbar(poly, ax=left, label=f"energy per cell ({unit})")
    im = right.imshow(np.ma.masked_less_equal(plane, 0.0), origin="lower", extent=extent,
                      norm=energy_norm(plane), cmap=ENERGY_CMAP, interpolation="nearest")
    _frame(right, view)
    right.set_title(f"{grid.pixel_cm:g} cm pixels, layer {layer}")
    fig.colorbar(im, ax=right, label=f"energy per pixel ({unit})")
    fig.suptitle(title)
    return _save(fig, path)


def layer_profile(layers: Sequence[int], energy_L: np.ndarray, attributions: Mapping[str, np.ndarray], *,
                  path: str | Path, unit: str = "MIP", output: str = "energy", title: str = "",
                  figsize=None) -> Path:
    """Top: energy per layer; bottom: each method's attribution per layer, over its largest |value|."""
    fig = _new("layer_profile", figsize)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.plot(layers, energy_L, "o-", color="k")
    top.set_ylabel(f"energy ({unit})")
    for name, values in attributions.items():
        values = np.asarray(values)
        bottom.plot(layers, values / max(np.max(np.abs(values)), 1e-12), "o-", label=name)
    bottom.axhline(0.0, color="0.6", lw=0.8)
    bottom.set_ylabel(f"{output} attribution / max")
    bottom.set_xlabel("layer")
    bottom.legend(fontsize="small")
    fig.suptitle(title)
    return _save(fig, path)


def layer_heatmaps(volume_HxWxL: np.ndarray, extent, layers: Sequence[int], *, path: str | Path,
                   label: str, title: str = "", signed: bool = True, view=None, figsize=None) -> Path:
    """One small map per layer on a shared colour scale (symmetric if `signed`, else log);
    `view` (x0, x1, y0, y1) cm zooms every map (default: the whole image)."""
    view = view or extent
    volume = np.asarray(volume_HxWxL)
    n = volume.shape[-1]
    cols = int(np.ceil(np.sqrt(n * 2)))
    rows = int(np.ceil(n / cols))
    fig = _new("layer_heatmaps", figsize)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    norm, cmap = (signed_norm(volume), SIGNED_CMAP) if signed else (energy_norm(volume), ENERGY_CMAP)
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
        else:
            plane = volume[..., i] if signed else np.ma.masked_less_equal(volume[..., i], 0.0)
            im = ax.imshow(plane, origin="lower", extent=extent, norm=norm, cmap=cmap,
                           interpolation="nearest")
            ax.set_xlim(view[0], view[1])
            ax.set_ylim(view[2], view[3])
            ax.set_title(f"layer {layers[i]}", fontsize="small")
    fig.colorbar(im, ax=axes.tolist(), label=label, shrink=0.8)
    fig.suptitle(f"{title}\n{view[1] - view[0]:.1f} x {view[3] - view[2]:.1f} cm per map, "
                 f"x from {view[0]:.1f} cm, y from {view[2]:.1f} cm")
    return _save(fig, path)


def cell_map(geometry: types.Geometry, cells: np.ndarray, values: np.ndarray, layer: int, extent, *,
             path: str | Path, label: str, title: str = "", signed: bool = True, figsize=None) -> Path:
    """Per-hit values (an attribution, or energies if not `signed`) on the real cells of a layer."""
    fig = _new("cell_map", figsize)
    ax = fig.subplots()
    on = geometry.layer[cells] == layer
    norm, cmap = (signed_norm(values[on]), SIGNED_CMAP) if signed else (energy_norm(values[on]), ENERGY_CMAP)
    poly = _draw_cells(ax, geometry, cells, values, norm, cmap, layer, extent)
    fig.colorbar(poly, ax=ax, label=label)
    ax.set_title(f"{title}\nlayer {layer}" if title else f"layer {layer}", fontsize="medium")
    return _save(fig, path)


def layer_animation(volumes: Sequence[tuple[np.ndarray, str, bool]], extent, layers: Sequence[int], *,
                    gif_path: str | Path, html_path: str | Path | None = None, title: str = "",
                    view=None, fps: float = 3.0, figsize=None) -> tuple[Path, Path | None]:
    """The layer-by-layer view: one frame per layer, one panel per (volume_HxWxL, label, signed).

    Frames are rendered once and written as a looping GIF and as an HTML page with a slider
    (frames embedded as base64 PNG, so the page is self-contained).
    """
    w, h = figsize or FIGSIZES["layer_animation"]
    fig = _new("layer_animation", (w * len(volumes), h))
    axes = np.atleast_1d(fig.subplots(1, len(volumes)))
    images = []
    for ax, (volume, label, signed) in zip(axes, volumes, strict=True):
        volume = np.asarray(volume)
        norm, cmap = (signed_norm(volume), SIGNED_CMAP) if signed else (energy_norm(volume), ENERGY_CMAP)
        im = ax.imshow(volume[..., 0], origin="lower", extent=extent, norm=norm, cmap=cmap,
                       interpolation="nearest")
        _frame(ax, view or extent)
        fig.colorbar(im, ax=ax, label=label, shrink=0.85)
        images.append((im, volume, signed))
    frames = []
    for i, layer in enumerate(layers):
        for im, volume, signed in images:
            im.set_data(volume[..., i] if signed else np.ma.masked_less_equal(volume[..., i], 0.0))
        fig.suptitle(f"{title}\nlayer {layer}" if title else f"layer {layer}")
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
        frames.append(buf.getvalue())
    gif_path = Path(gif_path)
    gif_path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [Image.open(io.BytesIO(f)).convert("RGB") for f in frames]
    pictures[0].save(gif_path, save_all=True, append_images=pictures[1:], duration=int(1000 / fps),
                     loop=0)
    if html_path is not None:
        html_path = Path(html_path)
        html_path.write_text(_slider_html(frames, layers, title))
    return gif_path, html_path


def _slider_html(frames: Sequence[bytes], layers: Sequence[int], title: str) -> str:
    sources = ",\n".join(f'"data:image/png;base64,{base64.b64encode(f).decode()}"' for f in frames)
    names = ", ".join(str(int(x)) for x in layers)
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title or "layers"}</title></head>
<body style="font-family: sans-serif">
<div><input id="slider" type="range" min="0" max="{len(frames) - 1}" value="0" style="width: 60%">
layer <span id="layer"></span> <button id="play">play</button></div>
<img id="frame" alt="layer frame">
<script>
const frames = [{sources}];
const layers = [{names}];
const slider = document.getElementById("slider"), img = document.getElementById("frame");
function show(i) {{ slider.value = i; img.src = frames[i];
  document.getElementById("layer").textContent = layers[i]; }}
slider.oninput = () => show(Number(slider.value));
let timer = null;
document.getElementById("play").onclick = () => {{
  if (timer) {{ clearInterval(timer); timer = null; return; }}
  timer = setInterval(() => show((Number(slider.value) + 1) % frames.length), 400); }};
show(0);
</script></body></html>
"""


def hits_3d(geometry: types.Geometry, cells: np.ndarray, energies: np.ndarray, *, path: str | Path,
            unit: str = "MIP", title: str = "", figsize=None) -> Path:
    """Every hit at its cell centre (z along the beam), coloured and sized by energy."""
    fig = _new("hits_3d", figsize)
    ax = fig.add_subplot(projection="3d")
    order = np.argsort(energies)  # the brightest hits drawn last, on top
    cells, energies = cells[order], energies[order]
    norm = energy_norm(energies)
    size = 2.0 + 40.0 * np.sqrt(np.clip(energies, 0.0, None) / max(float(energies.max(initial=0)), 1e-6))
    points = ax.scatter(geometry.z[cells], geometry.x[cells], geometry.y[cells], s=size, norm=norm,
                        c=np.clip(energies, norm.vmin, None), cmap=ENERGY_CMAP, depthshade=False)
    ax.set_xlabel("z (cm)")
    ax.set_ylabel("x (cm)")
    ax.set_zlabel("y (cm)")
    fig.colorbar(points, ax=ax, label=f"hit energy ({unit})", shrink=0.7, pad=0.1)
    fig.suptitle(title)
    return _save(fig, path)


# -------------------------------------------------------------------------------- geometry QA


def _layer_rows(geometry: types.Geometry, layer: int, zside: int | None) -> np.ndarray:
    zside = zside if zside is not None else (1 if (geometry.zside == 1).any() else -1)
    rows = np.flatnonzero((geometry.layer == layer) & (geometry.zside == zside))
    if not len(rows):
        raise ValueError(f"the geometry has no cell in layer {layer} at zside {zside}")
    return rows


def covered_area(table: InterpolationTable, geometry: types.Geometry, layer: int,
                 zside: int | None = None) -> np.ndarray:
    """(ny, nx) fraction of every full-grid pixel covered by the layer's cells: sum over cells of
    weight x cell area / pixel area. 1 inside the detector, between 0 and 1 on its edges and in
    gaps; above 1 only where cells overlap (a geometry bug)."""
    rows = _layer_rows(geometry, layer, zside)
    grid = table.grid
    weight = table.weight[rows]
    flat = table.iy[rows].astype(np.int64) * grid.nx + table.ix[rows]
    area = np.bincount(flat[weight > 0], weights=(weight * table.cell_area[rows, None])[weight > 0],
                       minlength=grid.nx * grid.ny)
    return (area / grid.pixel_cm**2).reshape(grid.ny, grid.nx)


def coverage_map(table: InterpolationTable, geometry: types.Geometry, layer: int, *, path: str | Path,
                 zside: int | None = None, figsize=None) -> Path:
    """The covered fraction of every pixel of one layer (`covered_area`) over the full grid."""
    covered = covered_area(table, geometry, layer, zside)
    grid = table.grid
    used = covered > 0
    ys, xs = np.nonzero(used)
    fig = _new("coverage_map", figsize)
    ax = fig.subplots()
    extent = (grid.x0, grid.x0 + grid.nx * grid.pixel_cm, grid.y0, grid.y0 + grid.ny * grid.pixel_cm)
    im = ax.imshow(np.ma.masked_equal(covered, 0.0), origin="lower", extent=extent, cmap="viridis",
                   vmin=0.0, vmax=max(1.0, float(covered.max())), interpolation="nearest")
    p = grid.pixel_cm
    _frame(ax, (grid.x0 + (xs.min() - 2) * p, grid.x0 + (xs.max() + 3) * p,
                grid.y0 + (ys.min() - 2) * p, grid.y0 + (ys.max() + 3) * p))
    fig.colorbar(im, ax=ax, label="covered fraction of the pixel")
    partial, over = int(np.sum(used & (covered < 0.999))), int(np.sum(covered > 1.001))
    ax.set_title(f"layer {layer}: {int(used.sum())} pixels of {grid.pixel_cm:g} cm touched,\n"
                 f"{partial} partly covered (edges, gaps), {over} over-covered (overlaps)", fontsize="medium")
    return _save(fig, path)


def grid_overlap(table: InterpolationTable, geometry: types.Geometry, layer: int, *, path: str | Path,
                 centre_xy: Sequence[float] | None = None, half_width_cm: float = 3.0,
                 zside: int | None = None, figsize=None) -> Path:
    """Zoom on a few cells: their polygons over the grid squares they overlap (table rows with
    weight > 0), each square shaded by the number of cells sharing it."""
    rows = _layer_rows(geometry, layer, zside)
    if centre_xy is None:  # the cell nearest the layer's centroid
        mean = geometry.center[rows, :2].mean(axis=0)
        centre_xy = geometry.center[rows[np.argmin(np.sum((geometry.center[rows, :2] - mean) ** 2, 1))], :2]
    cx, cy = float(centre_xy[0]), float(centre_xy[1])
    view = (cx - half_width_cm, cx + half_width_cm, cy - half_width_cm, cy + half_width_cm)
    # Cells a little beyond the view too, so pixels on its border count all their cells.
    reach = half_width_cm + 2.0
    near = rows[(np.abs(geometry.x[rows] - cx) < reach) & (np.abs(geometry.y[rows] - cy) < reach)]
    grid, p = table.grid, table.grid.pixel_cm
    used = table.weight[near] > 0
    pixels, sharing = np.unique(np.stack([table.ix[near][used], table.iy[near][used]], 1), axis=0,
                                return_counts=True)
    in_view = int(np.sum((np.abs(geometry.x[near] - cx) < half_width_cm)
                         & (np.abs(geometry.y[near] - cy) < half_width_cm)))
    x0, y0 = grid.x0 + pixels[:, 0] * p, grid.y0 + pixels[:, 1] * p
    squares = np.stack([np.stack([x0, y0], 1), np.stack([x0 + p, y0], 1), np.stack([x0 + p, y0 + p], 1),
                        np.stack([x0, y0 + p], 1)], axis=1)
    fig = _new("grid_overlap", figsize)
    ax = fig.subplots()
    shaded = PolyCollection(squares, array=sharing, cmap="Blues", edgecolors="0.5", linewidths=0.5,
                            norm=colors.Normalize(0, max(int(sharing.max(initial=1)), 1)), alpha=0.8)
    ax.add_collection(shaded)
    ax.add_collection(PolyCollection(_polygons(geometry, near), facecolors="none", edgecolors="C3",
                                     linewidths=1.0))
    ax.plot(geometry.x[near], geometry.y[near], ".", color="C3", ms=3)
    _frame(ax, view)
    fig.colorbar(shaded, ax=ax, label="cells overlapping the pixel")
    ax.set_title(f"layer {layer}: {in_view} cell centres in view, pixels of {p:g} cm", fontsize="medium")
    return _save(fig, path)
