"""The main job on the embedded default: the synthetic 2018-like (v8) HGCAL, both endcaps.

So far the main job builds the geometry (7.28 M silicon cells, 2 x 40 layers) and prints its
summary; later stages (simulate, shard, train, evaluate, report) extend this config.
Measured on 2 CPU cores: full geometry built in 1.7 s, peak RSS 1.4 GB
(`python benchmarks/geometry.py`).

  python scripts/make_geometry.py synthetic --config configs/default.py --out runs/demo/geometry.npz
  python scripts/make_geometry.py synthetic --config configs/default.py:smoke --out /tmp/g.npz

Variants: `smoke` = layers 1-12 in a 30-degree phi sector, particles aimed into it, 96 events.
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

    config.interpolation = interp = ml_collections.ConfigDict()
    interp.pixel_cm = 0.7  # the 2018 system's pixel
    interp.window = 32  # W x W shower window; 0 = the full-detector grid
    interp.cache_dir = "runs/cache"  # interpolation tables, keyed by geometry hash and grid

    # The simulated dataset (hgcal_jax/simulation/spec.py documents every field).
    config.simulation = sim = ml_collections.ConfigDict()
    sim.particles = "e-,e+,gamma"
    sim.energy_spectrum = "log-uniform"
    sim.energy_min = 10.0
    sim.energy_max = 200.0
    sim.abs_eta_min = 1.6
    sim.abs_eta_max = 2.8
    sim.zsides = "both"
    sim.phi_min_deg = -180.0
    sim.phi_max_deg = 180.0
    sim.vertex_sigma_z = 5.0
    sim.reference_layer = 10
    sim.spot_energy = 0.22**2
    sim.noise_mip = 1.0
    sim.threshold_mip = 3.0
    sim.noise_radius_cm = 12.0
    sim.upstream = True
    sim.upstream_x0 = 2.0
    sim.upstream_eta_slope = 2.0
    sim.leakage = True
    sim.dead_fraction = 0.01
    sim.dead_seed = 12345

    config.data = data = ml_collections.ConfigDict()
    data.dir = "runs/demo/data"
    data.train_events = 20000
    data.val_events = 2000
    data.test_events = 4000
    data.events_per_shard = 1000
    data.workers = 0  # 0 = half the cores

    if arg == "smoke":
        geometry.layers = "1-12"
        geometry.phi_min_deg = 0.0
        geometry.phi_max_deg = 30.0
        sim.abs_eta_min = 1.9
        sim.abs_eta_max = 2.4
        sim.phi_min_deg = 8.0
        sim.phi_max_deg = 22.0
        data.train_events, data.val_events, data.test_events = 64, 16, 16
        data.events_per_shard = 32
    elif arg not in (None, ""):
        raise ValueError(f"configs/default.py: unknown variant {arg!r} (known: smoke)")
    return config
