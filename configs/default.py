"""The main job on the embedded default: the synthetic 2018-like (v8) HGCAL, both endcaps.

So far the main job builds the geometry (7.28 M silicon cells, 2 x 40 layers) and prints its
summary; later stages (simulate, shard, train, evaluate, report) extend this config.
Measured on 2 CPU cores: full geometry built in 1.7 s, peak RSS 1.4 GB
(`python benchmarks/geometry.py`).

  python scripts/make_geometry.py synthetic --config configs/default.py --out runs/demo/geometry.npz
  python scripts/make_geometry.py synthetic --config configs/default.py:smoke --out /tmp/g.npz

Variants: `smoke` = layers 1-4 and 29, a 60-degree phi sector: a few thousand cells, for tests.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.geometry = geometry = ml_collections.ConfigDict()
    geometry.source = "synthetic"  # synthetic | cmssw | ntuple
    geometry.path = ""  # input ROOT file(s), comma-separated, for the cmssw and ntuple sources
    geometry.layers = "1-40"  # e.g. "1-28" (EE only) or "1-4,29"
    geometry.zsides = "both"  # both | + | -
    geometry.phi_min_deg = -180.0
    geometry.phi_max_deg = 180.0
    geometry.eta_min = 1.5
    geometry.eta_max = 3.0
    geometry.small_cell_radius = 70.0  # cm; fine (small-cell) wafers inside this radius
    geometry.include_scintillator = False  # ntuple/cmssw sources: keep BH scintillator cells

    if arg == "smoke":
        geometry.layers = "1-4,29"
        geometry.phi_min_deg = 0.0
        geometry.phi_max_deg = 15.0
    elif arg not in (None, ""):
        raise ValueError(f"configs/default.py: unknown variant {arg!r} (known: smoke)")
    return config
