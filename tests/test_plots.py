"""Figures: every figure function writes a non-empty PNG of its nominal size, the animation has one
frame per layer, the coverage map conserves area, and scripts/visualize.py runs on a smoke dataset."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image, ImageSequence

from hgcal_jax import interpolation, plots
from tests.train_helpers import REPO, make_dataset

TRUTH = {"event_id": 7, "pid": 22, "energy": 52.3, "eta": -2.1, "phi": 0.25}


@pytest.fixture(scope="module")
def table(tiny_geometry):
    return interpolation.build(tiny_geometry, interpolation.Grid.full(tiny_geometry, window=24))


@pytest.fixture(scope="module")
def event(tiny_geometry, table):
    """A fake shower: cells within 4 cm of one axis in every layer, of the -z endcap."""
    g = tiny_geometry
    near = (g.zside == -1) & (np.hypot(g.x - 80.0, g.y - 20.0) < 4.0)
    cells = np.flatnonzero(near).astype(np.int32)
    r = np.hypot(g.x[cells] - 80.0, g.y[cells] - 20.0)
    energies = (100.0 * np.exp(-r)).astype(np.float32)
    out = interpolation.interpolate(interpolation.DeviceTable.from_table(table), jnp.asarray(cells[None]),
                                    jnp.asarray(energies[None]), jnp.ones((1, len(cells)), bool))
    return cells, energies, np.asarray(out.image[0]), np.asarray(out.origin_cm[0])


def check_png(path, name: str) -> None:
    width, height = plots.FIGSIZES[name]
    assert path.stat().st_size > 0
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.size == (round(width * plots.DPI), round(height * plots.DPI))
        assert np.asarray(img.convert("L")).std() > 0  # something was drawn


def figure_calls(geometry, table, event, tmp_path):
    cells, energies, image, origin = event
    grid = table.grid
    extent = plots.image_extent(grid, origin)
    attribution = image * np.linspace(-1.0, 1.0, image.size).reshape(image.shape)
    title = plots.event_title(TRUTH)
    return {
        "event_display": lambda: plots.event_display(geometry, cells, energies, image, grid, origin,
                                                     title=title, path=tmp_path / "display.png"),
        "layer_profile": lambda: plots.layer_profile(grid.layers, image.sum((0, 1)),
                                                     {"grad_x_input": attribution.sum((0, 1))},
                                                     title=title, path=tmp_path / "profile.png"),
        "layer_heatmaps": lambda: plots.layer_heatmaps(attribution, extent, grid.layers, label="a",
                                                       title=title, path=tmp_path / "heat.png"),
        "cell_map": lambda: plots.cell_map(geometry, cells, energies - energies.mean(), 1, extent,
                                           label="a", title=title, path=tmp_path / "cells.png"),
        "hits_3d": lambda: plots.hits_3d(geometry, cells, energies, title=title, path=tmp_path / "hits.png"),
        "coverage_map": lambda: plots.coverage_map(table, geometry, 1, path=tmp_path / "coverage.png"),
        "grid_overlap": lambda: plots.grid_overlap(table, geometry, 29, centre_xy=(80.0, 20.0),
                                                   path=tmp_path / "overlap.png"),
    }


@pytest.mark.parametrize("name", ["event_display", "layer_profile", "layer_heatmaps", "cell_map", "hits_3d",
                                  "coverage_map", "grid_overlap"])
def test_every_figure_writes_a_png_of_its_size(name, tiny_geometry, table, event, tmp_path):
    path = figure_calls(tiny_geometry, table, event, tmp_path)[name]()
    check_png(path, name)


def test_animation_has_one_frame_per_layer(table, event, tmp_path):
    _, _, image, origin = event
    extent, layers = plots.image_extent(table.grid, origin), table.grid.layers
    volumes = [(image, "energy", False), (image - image.mean(), "attribution", True)]
    gif, html = plots.layer_animation(volumes, extent, layers, gif_path=tmp_path / "a.gif",
                                      html_path=tmp_path / "a.html")
    with Image.open(gif) as img:
        assert img.n_frames == len(layers)
        sizes = {frame.size for frame in ImageSequence.Iterator(img)}
    w, h = plots.FIGSIZES["layer_animation"]
    assert sizes == {(round(2 * w * plots.DPI), round(h * plots.DPI))}
    text = html.read_text()
    assert text.count("data:image/png;base64,") == len(layers)
    assert 'type="range"' in text and f'max="{len(layers) - 1}"' in text


def test_covered_area_conserves_the_layer_area(tiny_geometry, table):
    g = tiny_geometry
    covered = plots.covered_area(table, g, 2, zside=1)
    in_layer = (g.layer == 2) & (g.zside == 1)
    assert covered.shape == (table.grid.ny, table.grid.nx)
    np.testing.assert_allclose(covered.sum() * table.grid.pixel_cm**2, g.areas()[in_layer].sum(), rtol=1e-6)
    # Synthetic cells tile their wafers without overlaps: no pixel is covered more than once,
    # and the inside of the sector is covered exactly once.
    assert covered.max() <= 1 + 1e-5
    assert np.mean(np.isclose(covered[covered > 0], 1.0, atol=1e-4)) > 0.8


def test_event_title_names_the_truth():
    assert plots.event_title(TRUTH) == "γ 52.3 GeV, η = -2.10, φ = 0.25 rad (event 7)"
    assert plots.event_title({**TRUTH, "pid": 999}).startswith("pid 999 ")


def test_visualize_script_on_a_smoke_dataset(tmp_path):
    data = make_dataset(tmp_path / "data")
    common = ["--data", str(data), "--out", str(tmp_path / "out"), "--config", "configs/default.py:smoke",
              f"--config.interpolation.cache_dir={tmp_path / 'cache'}"]
    for args in (["--event", "3"], ["geometry", "--layer", "2"]):
        done = subprocess.run([sys.executable, "scripts/visualize.py", *args, *common], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"event00003_display.png", "event00003_layers.png", "event00003_layers.gif",
            "event00003_layers.html", "event00003_hits3d.png", "geometry_layer02_overlap.png",
            "geometry_layer02_coverage.png"} <= names
    check_png(tmp_path / "out" / "event00003_display.png", "event_display")
    with Image.open(tmp_path / "out" / "event00003_layers.gif") as gif:
        assert gif.n_frames == 12  # the smoke geometry's layers 1-12
