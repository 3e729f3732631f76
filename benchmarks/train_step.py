"""Train-step throughput and peak memory of every config, at smoke and default sizes.

  python benchmarks/train_step.py --json runs/bench/train_step.json [--data runs/demo/data]
  python benchmarks/train_step.py --configs default.py:smoke,rnn.py:lstm,smoke --steps 5

Each (config, size) runs in its own subprocess (so peak RSS is its own): it builds the run's
Setup, jits the train step and times `--steps` steps on device-resident batches of the dataset.
Smoke sizes use a freshly simulated smoke dataset; default sizes use --data (or a small dataset
simulated with the default config).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CONV3D_CONFIGS = ("cnn_local3d.py", "cnn_inception.py")
DEFAULT_CONFIGS = ["default.py", "cnn_local3d.py", "cnn_inception.py", "rnn.py:lstm", "rnn.py:gru",
                   "full_detector.py"]

CHILD = """
import functools, json, resource, sys, time
import jax
from hgcal_jax import cli, optim, steps, train
config = cli.load(sys.argv[1])
config.data.dir, config.interpolation.cache_dir = sys.argv[2], sys.argv[3]
n_steps = int(sys.argv[4])
config.data.geometry = sys.argv[5]
if sys.argv[6]:
    config.model.conv3d = sys.argv[6]
setup = train.Setup(config)
tx, schedule = optim.make(config.optim, 1000)
graphdef, state = steps.init_state(setup.build_model(), tx)
n_params = sum(x.size for x in jax.tree.leaves(state.params))
fn = jax.jit(functools.partial(steps.train_step, graphdef=graphdef, tx=tx, schedule=schedule,
             target_spec=setup.target_spec, stats=setup.stats, loss_weights=setup.loss_weights),
             donate_argnums=0)
it = setup.train_iterator(); batch = next(it); it.close(); batch.pop("event_id")
key = jax.random.key(0)
start = time.perf_counter(); state, m = fn(state, batch, setup.table, setup.cell_weight, key)
jax.block_until_ready(m); compile_s = time.perf_counter() - start
start = time.perf_counter()
for _ in range(n_steps):
    state, m = fn(state, batch, setup.table, setup.cell_weight, key)
jax.block_until_ready(m)
dt = time.perf_counter() - start
print(json.dumps({"events_per_s": round(n_steps * config.data.batch_size / dt, 1),
                  "step_ms": round(1000 * dt / n_steps, 1), "compile_s": round(compile_s, 1),
                  "batch": config.data.batch_size, "image": list(setup.grid.image_shape),
                  "params": int(n_params),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def simulate(config_name: str, directory: Path, events: int) -> None:
    sys.path.insert(0, str(REPO))
    from hgcal_jax import cli
    from hgcal_jax.geometry import io, sources
    from hgcal_jax.simulation import simulator
    from hgcal_jax.simulation.spec import SimulationSpec

    config = cli.load(str(REPO / "configs" / config_name))
    io.save(sources.from_config(config.geometry), directory / "geometry.npz")
    simulator.simulate_dataset(str(directory / "geometry.npz"), SimulationSpec.from_config(config.simulation),
                               str(directory), {"train": events, "val": 32, "test": 0}, 1000, 0,
                               progress=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--data", help="dataset for default sizes (default: simulate 512 events)")
    parser.add_argument("--geometry", default="", help="its geometry (default: <data>/geometry.npz)")
    parser.add_argument("--configs", help="comma-separated config[:variant] list, ';'-separated if "
                                          "variants contain commas", default=None)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sizes", default="smoke,default")
    parser.add_argument("--no-conv3d-baseline", dest="conv3d_baseline", action="store_false",
                        help="skip the native-3D-conv baseline of the 3D models at default size")
    args = parser.parse_args()
    names = (args.configs.split(";") if args.configs and ";" in args.configs
             else args.configs.split(",") if args.configs else DEFAULT_CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = {"smoke": tmp / "smoke", "default": Path(args.data) if args.data else tmp / "default"}
        sizes = args.sizes.split(",")
        if "smoke" in sizes:
            data["smoke"].mkdir()
            simulate("default.py:smoke", data["smoke"], 64)
        if "default" in sizes and not args.data:
            data["default"].mkdir()
            simulate("default.py", data["default"], 512)
        results = {}
        for name in names:
            for size in sizes:
                spec = name if size == "default" else (
                    f"{name},smoke" if ":" in name else f"{name}:smoke")
                # The 3D models unfold their 3D convs into 2D ones on CPU (models.layers.conv3d_
                # depth_unfold); at default size the native 3D conv runs beside them as the baseline.
                variants = [""] + (["native"] if size == "default" and name.split(":")[0] in CONV3D_CONFIGS
                                   and args.conv3d_baseline else [])
                for conv3d in variants:
                    key = f"{name} [{size}{', native 3D conv' if conv3d else ''}]"
                    results[key] = run_child(spec, data[size], tmp / "cache", args, size, conv3d)
                    print(key, results[key], flush=True)
    common.write_json(args.json, {"steps": args.steps, "results": results, "machine": common.machine()})


def run_child(spec: str, data: Path, cache: Path, args, size: str, conv3d: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO / "configs" / spec), str(data), str(cache), str(args.steps),
         args.geometry if (size == "default" and args.geometry) else "", conv3d],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1][:200]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
