"""Input-pipeline benchmark: is training ever waiting for data?

  python benchmarks/pipeline.py --json runs/bench/pipeline.json [--data runs/demo/data]

Measured in one run, with the default config (window images, the global-z CNN, batch 64):
- loader_events_per_s: device-ready batches from the Grain pipeline (parse, canonicalise, pad,
  batch, mp_prefetch with the default worker count, make_array_from_process_local_data);
- train_step_events_per_s: the default model's jitted train step on batches already on device;
- loader_over_step: their ratio (>= 2 means the loader has headroom);
- input_bound_fraction: in a real training run (train_and_evaluate), time blocked on the next
  batch / wall time, averaged over the log intervals after the first (compilation);
- a worker-count scaling table of the loader.
Without --data, a dataset of --events simulated events is written to a temporary directory.
"""

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from hgcal_jax import cli, optim, steps, train  # noqa: E402
from hgcal_jax.geometry import io, sources  # noqa: E402
from hgcal_jax.simulation import simulator  # noqa: E402
from hgcal_jax.simulation.spec import SimulationSpec  # noqa: E402


def loader_rate(setup, workers: int, n_batches: int) -> float:
    setup.pipeline_spec = type(setup.pipeline_spec)(**{**vars(setup.pipeline_spec), "workers": workers})
    it = setup.train_iterator()
    jax.block_until_ready(next(it)["cells"])  # start-up (worker spawn) is not throughput
    start = time.perf_counter()
    for _ in range(n_batches):
        batch = next(it)
    jax.block_until_ready(batch["cells"])
    rate = n_batches * setup.config.data.batch_size / (time.perf_counter() - start)
    it.close()
    return rate


def step_rate(setup, n_steps: int) -> float:
    config = setup.config
    tx, schedule = optim.make(config.optim, 1000)
    graphdef, state = steps.init_state(setup.build_model(), tx)
    fn = jax.jit(functools.partial(steps.train_step, graphdef=graphdef, tx=tx, schedule=schedule,
                                   target_spec=setup.target_spec, stats=setup.stats,
                                   loss_weights=setup.loss_weights), donate_argnums=0)
    it = setup.train_iterator()
    batches = [next(it) for _ in range(4)]
    it.close()
    for b in batches:
        b.pop("event_id")
    key = jax.random.key(0)
    state, m = fn(state, batches[0], setup.table, setup.cell_weight, key)
    jax.block_until_ready(m)
    start = time.perf_counter()
    for i in range(n_steps):
        state, m = fn(state, batches[i % 4], setup.table, setup.cell_weight, key)
    jax.block_until_ready(m)
    return n_steps * config.data.batch_size / (time.perf_counter() - start)


def input_bound_fraction(config, steps_: int) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        config.train.steps = steps_
        config.train.log_every = 10
        config.train.eval_every = steps_ * 10
        config.train.checkpoint_every = steps_ * 10
        config.train.histogram_every = 0
        train.train_and_evaluate(config, workdir)
        rows = [json.loads(x) for x in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
    waits = [r["train/input_wait_fraction"] for r in rows if "train/input_wait_fraction" in r][1:]
    return sum(waits) / max(len(waits), 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--config",
                        default=str(Path(__file__).resolve().parents[1] / "configs" / "default.py"))
    parser.add_argument("--data", help="a simulated dataset directory (default: simulate one)")
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=120)
    args = parser.parse_args()
    config = cli.load(args.config)
    tmp = tempfile.TemporaryDirectory()
    if args.data:
        config.data.dir = args.data
    else:
        config.data.dir = tmp.name
        geometry_path = Path(tmp.name) / "geometry.npz"
        io.save(sources.from_config(config.geometry), geometry_path)
        simulator.simulate_dataset(str(geometry_path), SimulationSpec.from_config(config.simulation),
                                   tmp.name, {"train": args.events, "val": 256, "test": 0}, 1000, 0,
                                   workers=2, progress=False)
    config.interpolation.cache_dir = str(Path(config.data.dir) / "cache")
    setup = train.Setup(config)
    default_workers = config.data.loader_workers
    scaling = {w: round(loader_rate(setup, w, args.batches), 1) for w in sorted({0, 1, 2, default_workers})}
    loader = scaling[default_workers]
    step = step_rate(setup, args.batches)
    result = {
        "config": args.config,
        "batch_size": config.data.batch_size,
        "loader_workers": default_workers,
        "loader_events_per_s": loader,
        "train_step_events_per_s": round(step, 1),
        "train_step_note": f"the default model ({config.model.name}) train step, batches on device",
        "loader_over_step": round(loader / step, 2),
        "input_bound_fraction": round(input_bound_fraction(config, args.train_steps), 4),
        "loader_scaling_events_per_s": {f"workers={w}": r for w, r in scaling.items()},
        "devices": f"{jax.device_count()} x {jax.devices()[0].platform}",
        "machine": common.machine(),
    }
    common.write_json(args.json, result)
    tmp.cleanup()


if __name__ == "__main__":
    main()
