"""Converts CMSSW HGCAL analysis ntuples (`ana/hgc`) into an event-shard dataset.

  python scripts/convert_ntuple.py --input ../shared/data/hgcal_ntuple_muons_35GeV_2ev.root \
      --out runs/ntuple_muons
  python scripts/convert_ntuple.py --input a.root,b.root --out runs/photons --pids 22 \
      --min_pt 5 --geometry runs/photons_geometry.npz

One record per selected generator particle with the hits of its own endcap (see
hgcal_jax/data/ntuple.py). Without --geometry the geometry is derived from the same inputs
(`geometry.ntuple.from_ntuple`, one extra pass over the rechits) and saved as OUT/geometry.npz.
A rerun with the same inputs and options over a complete OUT does nothing.
"""

import json
import time
from pathlib import Path

from absl import flags

from hgcal_jax import cli
from hgcal_jax.data import ntuple
from hgcal_jax.geometry import io
from hgcal_jax.geometry import ntuple as geometry_ntuple

_DEFAULT = ntuple.Selection()
_INPUT = flags.DEFINE_string("input", None, "Input ROOT ntuple(s), comma-separated.", required=True)
_OUT = flags.DEFINE_string("out", None, "Output dataset directory.", required=True)
_GEOMETRY = flags.DEFINE_string("geometry", None,
                                "Geometry .npz; default: derived from the inputs, saved as OUT/geometry.npz.")
_PIDS = flags.DEFINE_list("pids", [str(p) for p in _DEFAULT.pids], "PDG ids to select.")
_MIN_PT = flags.DEFINE_float("min_pt", _DEFAULT.min_pt, "Minimum generator pT (GeV).")
_REFERENCE_LAYER = flags.DEFINE_integer("reference_layer", _DEFAULT.reference_layer,
                                        "Layer (1-based) of the impact-position truth.")
_EVENTS_PER_SHARD = flags.DEFINE_integer("events_per_shard", 1000, "Records per shard.")
_MAX_UNKNOWN = flags.DEFINE_float("max_unknown_fraction", _DEFAULT.max_unknown_fraction,
                                  "Largest fraction of an endcap's silicon hits that may be missing "
                                  "from the geometry (dropped and counted); above it is an error.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the train/val/test assignment.")


def main(argv):
    if len(argv) > 1:
        raise cli.ConfigError(f"unexpected arguments {argv[1:]}")
    start = time.perf_counter()
    paths = [Path(p) for p in _INPUT.value.split(",") if p]
    out = Path(_OUT.value)
    try:
        selection = ntuple.Selection(
            pids=tuple(int(p) for p in _PIDS.value), min_pt=_MIN_PT.value,
            reference_layer=_REFERENCE_LAYER.value, max_unknown_fraction=_MAX_UNKNOWN.value,
        )
    except ValueError as e:
        raise cli.ConfigError(str(e)) from None
    try:
        if _GEOMETRY.value:
            geometry_path = Path(_GEOMETRY.value)
            geometry = io.load(geometry_path)
        else:
            geometry_path = out / "geometry.npz"
            geometry = geometry_ntuple.from_ntuple(paths)
            io.save(geometry, geometry_path)
        meta = ntuple.convert_to_dataset(
            paths, geometry, selection, out, events_per_shard=_EVENTS_PER_SHARD.value,
            seed=_SEED.value, extra_meta={"geometry_file": str(geometry_path)},
        )
    except (ntuple.NtupleError, io.GeometryFileError) as e:
        raise SystemExit(f"error: {e}") from None  # bad input: one line naming the file, no traceback
    stats = meta["conversion"]
    print(json.dumps(stats, indent=2))
    splits = ", ".join(f"{name} {split['events']}" for name, split in meta["splits"].items()) or "none"
    print(f"{stats['records_written']} records ({splits}) from {stats['files']} file(s), "
          f"{stats['entries']} entries -> {out}; skipped {stats['skipped_empty']} empty, dropped "
          f"{stats['hits_unknown']} unknown and {stats['hits_scintillator']} scintillator hits; "
          f"geometry {geometry_path} ({meta['geometry_hash'][:12]}); "
          f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    cli.run(main)
