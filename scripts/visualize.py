"""Event displays and geometry QA figures from a dataset directory.

  python scripts/visualize.py --data runs/demo/data --event 3 --out runs/demo/display
  python scripts/visualize.py --data runs/demo/data --event 3 --layer 10 --split val --out runs/demo/display
  python scripts/visualize.py geometry --data runs/demo/data --layer 1 --qa_x 40 --qa_y 10 --out runs/demo/qa

`event` (the default mode) writes, for event --event of --split: the display of one layer
(default: the shower maximum) as hexagonal cells beside the interpolated image, the energy of
every layer as heatmaps, the layer-by-layer animation (GIF and HTML with a slider), and the hits
in 3D. `geometry` writes the cells of --layer over the grid squares they overlap (a zoom of
--qa_half_width cm around --qa_x, --qa_y; default: the middle of the layer) and the covered
fraction of every pixel. The grid (pixel, window, table cache) is --config's interpolation
section (default: configs/default.py), e.g. --config configs/default.py:smoke
--config.interpolation.cache_dir=runs/cache.
"""

from pathlib import Path

import grain
import jax.numpy as jnp
import numpy as np
from absl import flags

from hgcal_jax import cli, interpolation, plots
from hgcal_jax.data import records, shards
from hgcal_jax.geometry import io as geometry_io

_DATA = flags.DEFINE_string("data", None, "Dataset directory (meta.json, shards, geometry.npz).")
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_GEOMETRY = flags.DEFINE_string("geometry", None, "Geometry .npz (default: <data>/geometry.npz).")
_SPLIT = flags.DEFINE_string("split", "test", "Split the event comes from.")
_EVENT = flags.DEFINE_integer("event", 0, "Event index in the split (shard order).")
_LAYER = flags.DEFINE_integer("layer", None, "Layer to display (default: shower maximum; 1 for geometry).")
_QA_X = flags.DEFINE_float("qa_x", None, "Geometry QA zoom centre x (cm).")
_QA_Y = flags.DEFINE_float("qa_y", None, "Geometry QA zoom centre y (cm).")
_QA_HALF = flags.DEFINE_float("qa_half_width", 3.0, "Geometry QA zoom half width (cm).")
_MODES = ("event", "geometry")


def grain_record(paths, index: int) -> bytes:
    """The raw record `index` of a split."""
    source = grain.sources.ArrayRecordDataSource([str(p) for p in paths])
    if not 0 <= index < len(source):
        raise cli.ConfigError(f"--event {index} is outside the split's {len(source)} events")
    return source[index]


def event_figures(geometry, table, out: Path) -> None:
    paths, meta = shards.open_split(_DATA.value, _SPLIT.value, geometry_io.content_hash(geometry))
    event = records.parse(grain_record(paths, _EVENT.value))
    unit, grid = meta.get("energy_unit", "GeV"), table.grid
    device_table = interpolation.DeviceTable.from_table(table)
    cells, energies, mask = event.cells, event.energies, np.ones((1, len(event.cells)), bool)
    # The jitted gather would clamp an unknown cell silently: refuse it with the event's id.
    interpolation.validate_hits(len(geometry), cells[None], energies[None], mask, [event.event_id])
    interp = interpolation.interpolate(device_table, jnp.asarray(cells[None]), jnp.asarray(energies[None]),
                                       jnp.asarray(mask))
    image, origin = np.asarray(interp.image[0]), np.asarray(interp.origin_cm[0])
    title = plots.event_title(event.truth)
    stem = out / f"event{_EVENT.value:05d}"
    extent = plots.image_extent(grid, origin)
    view = plots.shower_view(geometry, cells, energies)
    label = f"energy per pixel ({unit})"
    written = [
        plots.event_display(geometry, cells, energies, image, grid, origin, layer=_LAYER.value, unit=unit,
                            title=title, path=f"{stem}_display.png"),
        plots.layer_heatmaps(image, extent, grid.layers, label=label, title=title, signed=False, view=view,
                             path=f"{stem}_layers.png"),
        *plots.layer_animation([(image, label, False)], extent, grid.layers, title=title, view=view,
                               gif_path=f"{stem}_layers.gif", html_path=f"{stem}_layers.html"),
        plots.hits_3d(geometry, cells, energies, unit=unit, title=title, path=f"{stem}_hits3d.png"),
    ]
    print(f"{title}: {len(cells)} hits, {float(interp.dropped_energy[0]):.1f} {unit} outside the image")
    print("wrote " + ", ".join(str(p) for p in written))


def geometry_figures(geometry, table, out: Path) -> None:
    layer = _LAYER.value or int(geometry.layers()[0])
    centre = None if _QA_X.value is None or _QA_Y.value is None else (_QA_X.value, _QA_Y.value)
    written = [
        plots.grid_overlap(table, geometry, layer, centre_xy=centre, half_width_cm=_QA_HALF.value,
                           path=out / f"geometry_layer{layer:02d}_overlap.png"),
        plots.coverage_map(table, geometry, layer, path=out / f"geometry_layer{layer:02d}_coverage.png"),
    ]
    print("wrote " + ", ".join(str(p) for p in written))


def main(argv):
    mode = argv[1] if len(argv) > 1 else "event"
    if len(argv) > 2 or mode not in _MODES:
        raise cli.ConfigError(f"usage: visualize.py [{'|'.join(_MODES)}] --data DIR --out DIR [...]")
    if not _DATA.value and (mode == "event" or not _GEOMETRY.value):
        raise cli.ConfigError(f"{mode} mode needs --data" + (" or --geometry" if mode == "geometry" else ""))
    config = cli.config() if flags.FLAGS["config"].present else cli.load(cli.DEFAULT_CONFIG)
    geometry = geometry_io.load(_GEOMETRY.value or Path(_DATA.value) / "geometry.npz")
    grid = interpolation.Grid.full(geometry, pixel_cm=config.interpolation.pixel_cm,
                                   window=config.interpolation.window)
    table = interpolation.load_or_build(geometry, grid, config.interpolation.cache_dir, progress=False)
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    (event_figures if mode == "event" else geometry_figures)(geometry, table, out)


if __name__ == "__main__":
    cli.run(main)
