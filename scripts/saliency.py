"""What a trained network looks at: attributions of one output for chosen events, as .npz and figures.

  python scripts/saliency.py --workdir runs/demo/train --events 0,1,2 --out runs/demo/saliency
  python scripts/saliency.py --workdir runs/demo/train --energy_min 80 --energy_max 120 \
      --method grad_x_input,integrated_gradients,smoothgrad --output energy --out runs/demo/sal_100GeV

Events are indices into --split (shard order), or the first --max_events whose true energy is in
[--energy_min, --energy_max] GeV. Writes saliency.npz (hgcal_jax.saliency.explain's arrays plus
truth_<field>, event_index, layers) and per event and method: a layer profile, per-layer
heatmaps, the hit attribution on the hexagonal cells of the layer it peaks in, and the
layer-by-layer animation (GIF and HTML). --data and --cache_dir override the run's own paths.
"""

import json
from pathlib import Path

import ml_collections
import numpy as np
from absl import flags

from hgcal_jax import cli, plots, saliency, train
from hgcal_jax.data import shards

_UNITS = {"energy": " GeV", "eta": "", "phi": " rad"}  # the other targets are positions (cm)
_WORKDIR = flags.DEFINE_string("workdir", None, "Trained run directory (checkpoints).", required=True)
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "Split the events come from.")
_EVENTS = flags.DEFINE_list("events", [], "Event indices in the split, e.g. 0,1,2.")
_EMIN = flags.DEFINE_float("energy_min", None, "Select events with true energy >= this (GeV).")
_EMAX = flags.DEFINE_float("energy_max", None, "Select events with true energy <= this (GeV).")
_MAX = flags.DEFINE_integer("max_events", 4, "How many events an energy selection keeps.")
_METHODS = flags.DEFINE_list("method", ["grad_x_input", "integrated_gradients"],
                             f"Any of {','.join(saliency.IMAGE_METHODS)}.")
_OUTPUT = flags.DEFINE_string("output", "energy", "Which output (a target name of the run).")
_STEPS = flags.DEFINE_integer("steps", 256, "Integrated-gradients path points.")
_HOLD = flags.DEFINE_bool("hold_features", True, "Hit maps with the event features (raw sum, layer "
                          "profile, window centre) held; --nohold_features differentiates through them too.")
_FIGURES = flags.DEFINE_bool("figures", True, "Write figures (else only the .npz).")
_DATA = flags.DEFINE_string("data", None, "Dataset directory, if not the run's own.")
_CACHE = flags.DEFINE_string("cache_dir", None, "Interpolation-table cache, if not the run's own.")


def run_config() -> ml_collections.ConfigDict | None:
    """The run's config with --data/--cache_dir applied, or None to use it as saved."""
    if not (_DATA.value or _CACHE.value):
        return None
    config = ml_collections.ConfigDict(json.loads((Path(_WORKDIR.value) / "config.json").read_text()))
    config.data.dir = _DATA.value or config.data.dir
    config.interpolation.cache_dir = _CACHE.value or config.interpolation.cache_dir
    return config


def figures(out: Path, result: dict, e: int, setup, output: str, title: str) -> None:
    grid, geometry, unit = setup.grid, setup.geometry, setup.meta.get("energy_unit", "GeV")
    mask = result["mask"][e]
    cells, energies, image = result["cells"][e][mask], result["energies"][e][mask], result["image"][e]
    extent = plots.image_extent(grid, result["origin_cm"][e])
    view = plots.shower_view(geometry, cells, energies)
    stem = out / f"event{int(result['event_index'][e]):05d}"
    maps = {m: result[f"image_{m}"][e] for m in _METHODS.value}
    plots.layer_profile(grid.layers, image.sum(axis=(0, 1)), {m: a.sum(axis=(0, 1)) for m, a in maps.items()},
                        path=f"{stem}_profile.png", unit=unit, output=output, title=title)
    for method, attribution in maps.items():
        label = f"{method} of {output}"
        plots.layer_heatmaps(attribution, extent, grid.layers, path=f"{stem}_{method}_layers.png",
                             label=label, title=title, view=view)
        peak = int(grid.layers[int(np.argmax(np.abs(attribution).sum(axis=(0, 1))))])
        plots.cell_map(geometry, cells, result[f"hits_{method}"][e][mask], peak, view,
                       path=f"{stem}_{method}_cells.png", label=f"{label} (per hit)", title=title)
        plots.layer_animation([(image, f"energy per pixel ({unit})", False), (attribution, label, True)],
                              extent, grid.layers, gif_path=f"{stem}_{method}.gif",
                              html_path=f"{stem}_{method}.html", title=title, view=view)


def main(argv):
    del argv
    setup, graphdef, state, step = train.restore(_WORKDIR.value, run_config())
    names = setup.target_spec.names
    if _OUTPUT.value not in names:
        raise cli.ConfigError(f"--output {_OUTPUT.value!r} is not an output of this run ({', '.join(names)})")
    paths, _ = shards.open_split(setup.config.data.dir, _SPLIT.value)
    try:
        indices = saliency.select_events(paths, [int(i) for i in _EVENTS.value], (_EMIN.value, _EMAX.value),
                                         _MAX.value)
    except (IndexError, ValueError) as e:
        raise cli.ConfigError(f"{e} (--split {_SPLIT.value})") from None
    batch, truths = saliency.load_events(setup, paths, indices)
    result = saliency.explain(setup, graphdef, state, batch, _METHODS.value, names.index(_OUTPUT.value),
                              steps=_STEPS.value, hold_features=_HOLD.value)
    result["event_index"] = indices
    result.update({f"truth_{k}": np.array([t[k] for t in truths]) for k in truths[0]})
    out = Path(_OUT.value)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "saliency.npz", layers=np.asarray(setup.grid.layers), step=step,
                        output=_OUTPUT.value, pixel_cm=setup.grid.pixel_cm, **result)
    for e, truth in enumerate(truths):
        line = f"event {indices[e]}: {plots.event_title(truth)}, predicted {_OUTPUT.value} " \
               f"{float(result[f'pred_{_OUTPUT.value}'][e]):.4g}{_UNITS.get(_OUTPUT.value, ' cm')}"
        if "f_input" in result:
            change = result["f_input"][e] - result["f_baseline"][e]
            gap = result["image_integrated_gradients"][e].sum() - change
            line += f", IG completeness gap {gap:+.2g} of {change:.3g}"
        print(line)
        if _FIGURES.value:
            title = plots.event_title(truth)
            if "pred_energy" in result:
                title += f", reconstructed {float(result['pred_energy'][e]):.1f} GeV"
            figures(out, result, e, setup, _OUTPUT.value, title)
    figures_note = f" and the figures of {len(indices)} events" if _FIGURES.value else ""
    print(f"wrote {out / 'saliency.npz'}{figures_note}")


if __name__ == "__main__":
    cli.run(main)
