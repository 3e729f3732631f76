"""The main job: the synthetic 2018-like (v8) HGCAL (both endcaps, 7.28 M cells), simulated
e-/e+/photons of 10-200 GeV with nuisances, 32 x 32 x 40 shower windows, the global-z CNN.

Reached (test split, 4,000 events, 2,000 steps of batch 64, 12 min on 2 CPU cores; commands
below, numbers from `scripts/evaluate.py`): energy S = 26.2 +- 0.8 %, C = 0.1 +- 2.8 % (the
classical fitted layer-weighted sum: S = 26.0 +- 0.8 %, C = 0.57 +- 0.48 %); impact position
RMS 0.07-0.14 cm per energy bin (classical log-weighted barycentre: 0.08-0.47 cm).

  python scripts/make_geometry.py synthetic --config configs/default.py --out runs/demo/geometry.npz
  python scripts/simulate.py --config configs/default.py --geometry runs/demo/geometry.npz
  python scripts/train.py --config configs/default.py --workdir runs/demo/train
  python scripts/evaluate.py --workdir runs/demo/train

Variants:
- `long` (`make demo-long`): 100k train / 5k val / 20k test events simulated with their own seed,
  4,000 steps (18 min of training on 2 CPU cores, 8 min of simulation). Test split, 20,000
  events: energy S = 24.8 +- 0.3 %, C = 0.60 +- 0.18 % against the calibrated sum's S = 26.2 +-
  0.3 %, C = 0.28 +- 0.40 %; paired on the same events the network's sigma/E is 0.963 +- 0.012
  of the sum's. Impact RMS 0.06-0.11 cm (classical 0.09-0.48 cm).
- `smoke`: layers 1-12 in a 30-degree phi sector, particles aimed into it, 96 events, a tiny
  model, 2 steps (seconds; for tests).
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
    data.workers = 0  # simulation worker processes; 0 = half the cores
    data.simulation_seed = -1  # seed of the simulated events; -1 = config.seed (also the training seed)
    data.geometry = ""  # default: <data.dir>/geometry.npz
    data.batch_size = 64  # global batch, split over devices and hosts
    data.max_hits = 1024  # hits per event fed to the model (lowest energies cut, counted)
    data.loader_workers = 1  # Grain mp_prefetch worker processes (0 = parse in the main process)
    data.read_threads = 4

    config.model = model = ml_collections.ConfigDict()
    model.name = "cnn_global"  # cnn_global | cnn_local3d | cnn_inception | cnn_resnet | rnn
    model.channels = (64, 64, 128)
    model.norm = "batch"  # batch | layer | none
    model.dropout = 0.0
    model.head_widths = (128, 64)

    config.targets = tgt = ml_collections.ConfigDict()
    tgt.names = "energy,impact_x,impact_y"  # any of hgcal_jax.targets.TARGET_FIELDS
    tgt.energy = "log_ratio"  # log | log_ratio (correction to the raw calibrated sum) | linear
    tgt.position_scale = 1.0  # cm per unit of a position target (offset from the window centre)
    tgt.weights = ""  # per-target loss weights, comma-separated; empty = all 1

    config.optim = opt = ml_collections.ConfigDict()
    opt.name = "adamw"  # adamw | adam | sgd
    opt.lr = 1e-3
    opt.schedule = "cosine"  # cosine | exponential | constant
    opt.warmup_steps = 200
    opt.final_fraction = 0.01
    opt.b1 = 0.9
    opt.b2 = 0.999
    opt.weight_decay = 1e-4
    opt.momentum = 0.9  # sgd only
    opt.clip_norm = 1.0

    config.train = train = ml_collections.ConfigDict()
    train.steps = 2000
    train.stop_after = 0  # stop (with a checkpoint) after this step of the schedule; 0 = run all
    train.log_every = 50
    train.eval_every = 1000
    train.eval_split = "val"
    train.checkpoint_every = 500
    train.keep_checkpoints = 3
    train.histogram_every = 1000  # parameter histograms and a saliency image; 0 = never
    train.profile_start = 20
    train.profile_steps = 5
    config.profile = False  # capture a jax.profiler trace of train.profile_steps steps

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
        data.batch_size = 8
        data.max_hits = 256
        data.loader_workers = 0
        model.channels = (8, 16)
        model.head_widths = (16,)
        opt.warmup_steps = 1
        train.steps = 2
        train.log_every = 1
        train.eval_every = 2
        train.checkpoint_every = 2
        train.histogram_every = 2
    elif arg == "long":
        data.dir = "runs/long/data"
        data.simulation_seed = 1
        data.train_events, data.val_events, data.test_events = 100000, 5000, 20000
        train.steps = 4000
    elif arg not in (None, ""):
        raise ValueError(f"configs/default.py: unknown variant {arg!r} (known: smoke, long)")
    return config
