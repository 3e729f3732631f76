"""`train_and_evaluate(config, workdir)`: the whole training job, resumable from its workdir.

Data (sharded batches from the Grain pipeline) -> jitted train step (interpolation on device,
model, loss, optax update) on a `("data",)` mesh -> periodic logging (TensorBoard, metrics.jsonl,
a progress line), evaluation on the validation split, and Orbax checkpoints holding the state,
the data iterator and the config. Rerunning with the same workdir continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from hgcal_jax import (
    checkpoint,
    evaluation,
    interpolation,
    models,
    optim,
    parallel,
    resolution,
    saliency,
    steps,
)
from hgcal_jax import targets as targets_lib
from hgcal_jax.data import pipeline, shards
from hgcal_jax.geometry import io as geometry_io
from hgcal_jax.interpolation import operator
from hgcal_jax.simulation import materials


def cell_weights(geometry, energy_unit: str) -> np.ndarray:
    """GeV per hit unit for every cell: the simulator's dE/dx weights for MIP data, 1 for GeV."""
    if energy_unit == "GeV":
        return np.ones(len(geometry), np.float32)
    if energy_unit == "MIP":
        return (materials.absorber_x0(geometry.layer) / materials.MIP_PER_GEV_AT_1X0).astype(np.float32)
    raise ValueError(f"unknown energy_unit {energy_unit!r} in meta.json")


def derived_stats(paths, weight_C: np.ndarray, max_hits: int, n_max: int = 2000) -> dict:
    """Statistics of ln(raw calibrated sum) and of ln(E_true / raw sum), from train events.

    The raw sum is over the hits the model gets (the max_hits cut applied, as in the step)."""
    raw, true = [], []
    # n_cells: a cell beyond the geometry is a RecordError naming the record, not an IndexError.
    for event in shards.iter_events(paths, n_cells=len(weight_C)):
        keep = pipeline.kept_hits(event.energies, max_hits)
        raw.append(max(float(np.sum(event.energies[keep] * weight_C[event.cells[keep]])), 1e-6))
        true.append(event.truth["energy"])
        if len(raw) >= n_max:
            break
    log_raw, log_ratio = np.log(raw), np.log(np.asarray(true) / np.asarray(raw))
    return {"log_raw_energy": {"mean": float(log_raw.mean()), "std": float(log_raw.std()) or 1.0},
            "log_ratio": {"mean": float(log_ratio.mean()), "std": float(log_ratio.std()) or 1.0}}


class Setup:
    """Everything a run needs that does not change during it."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        data_dir = Path(config.data.dir)
        self.meta = shards.read_meta(data_dir)
        geometry_path = Path(config.data.geometry or data_dir / "geometry.npz")
        self.geometry = geometry_io.load(geometry_path)
        geometry_hash = geometry_io.content_hash(self.geometry)
        self.train_paths, _ = shards.open_split(data_dir, "train", geometry_hash)
        self.val_paths, _ = shards.open_split(data_dir, config.train.eval_split, geometry_hash)
        grid = interpolation.Grid.full(self.geometry, pixel_cm=config.interpolation.pixel_cm,
                                       window=config.interpolation.window)
        build = functools.partial(interpolation.load_or_build, self.geometry, grid,
                                  config.interpolation.cache_dir, progress=jax.process_index() == 0)
        if jax.process_count() > 1:
            # Process 0 builds a missing table; the others then load it from a shared cache_dir
            # (on host-local disks each builds its own, as before).
            table, error = None, None
            if jax.process_index() == 0:
                try:
                    table = build()
                except Exception as e:  # noqa: BLE001 - re-raised below, after the barrier
                    error = e
            # Reached even when process 0 failed, so the others do not wait for it forever.
            multihost_utils.sync_global_devices("interpolation table")
            if error is not None:
                raise error
            table = table if table is not None else build()
        else:
            table = build()
        self.grid = grid
        self.mesh = parallel.make_mesh()
        parallel.check_batch_size(config.data.batch_size, self.mesh)
        self.repl = parallel.replicated(self.mesh)
        self.batch_sharding = parallel.batch_sharding(self.mesh)
        self.table = jax.device_put(operator.DeviceTable.from_table(table), self.repl)
        weight_C = cell_weights(self.geometry, self.meta.get("energy_unit", "GeV"))
        self.cell_weight = jax.device_put(weight_C, self.repl)
        self.stats = {**self.meta["target_stats"], **derived_stats(self.train_paths, weight_C,
                                                                    config.data.max_hits)}
        t = config.targets
        self.target_spec = targets_lib.TargetSpec(names=tuple(t.names.split(",")), energy=t.energy,
                                                  position_scale=t.position_scale)
        self.loss_weights = tuple(float(w) for w in t.weights.split(",")) if t.weights else \
            (1.0,) * len(self.target_spec.names)
        if len(self.loss_weights) != len(self.target_spec.names):
            raise ValueError(f"targets.weights has {len(self.loss_weights)} entries for "
                             f"{len(self.target_spec.names)} targets")
        self.pipeline_spec = pipeline.PipelineSpec(
            batch_size=config.data.batch_size, max_hits=config.data.max_hits, seed=config.seed,
            workers=config.data.loader_workers, read_threads=config.data.read_threads,
            n_cells=len(self.geometry))  # the jitted gather would clamp unknown cells: refuse them
        self.n_features = 1 + (2 if grid.window else 0) + grid.n_layers  # see steps.prepare

    @property
    def host_target_spec(self) -> targets_lib.TargetSpec:
        """The targets the host pipeline can encode alone (absolute; no raw sum, no window).

        The train step recomputes its targets on device from the truth, relative to the window
        and the raw sum as configured; the pipeline's are for consumers without a device step.
        """
        if self.target_spec.energy == "log_ratio":
            return dataclasses.replace(self.target_spec, energy="log")
        return self.target_spec

    def train_iterator(self) -> pipeline.DeviceIterator:
        ds = pipeline.train_dataset(self.train_paths, self.pipeline_spec, self.host_target_spec,
                                    self.meta["target_stats"])
        return pipeline.DeviceIterator(iter(ds), self.batch_sharding)

    def build_model(self) -> nnx.Module:
        return models.build(self.config.model, image_shape=self.grid.image_shape,
                            n_features=self.n_features, n_outputs=len(self.target_spec.names),
                            rngs=nnx.Rngs(params=self.config.seed, dropout=self.config.seed + 1))


def predict(setup: Setup, eval_fn, state, paths=None) -> dict:
    """Model predictions (physical units, +z frame) and truth for every example of a split,
    padding removed: {"pred": {target: (N,)}, "truth": {field: (N,)}, "raw_energy", "zside",
    "event_id", "loss"}."""
    ds = pipeline.eval_dataset(paths or setup.val_paths, setup.pipeline_spec, setup.host_target_spec,
                               setup.meta["target_stats"])
    outputs = []
    for host_batch in ds:
        event_id = host_batch.pop("event_id")
        batch = jax.tree.map(lambda x: jax.make_array_from_process_local_data(setup.batch_sharding, x),
                             host_batch)
        # eval_fn returns replicated arrays (the global batch, processes in order), so device_get
        # works on every host; the ids are gathered in the same order.
        out = jax.device_get(eval_fn(state, batch, setup.table, setup.cell_weight))
        out["event_id"] = (multihost_utils.process_allgather(event_id, tiled=True)
                           if jax.process_count() > 1 else event_id)
        outputs.append(out)
    out = jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)
    keep = out.pop("weight") > 0
    return jax.tree.map(lambda x: x[keep], out)


def evaluate(setup: Setup, eval_fn, state, paths=None) -> dict:
    """Validation metrics: loss, energy response and resolution (model and raw calibrated sum),
    the fitted S and C and the resolution per energy bin, position RMS."""
    out = predict(setup, eval_fn, state, paths)
    metrics = {"loss": float(np.mean(out["loss"]))}
    truth_energy = out["truth"]["energy"]
    for name in setup.target_spec.names:
        pred = out["pred"][name]
        if name == "energy":
            res = resolution.measure(pred / truth_energy)
            raw = resolution.measure(out["raw_energy"] / truth_energy)
            metrics.update({"energy_response": res.mean, "energy_resolution": res.rel,
                            "energy_sigma_eff": res.sigma_eff, "raw_sum_response": raw.mean,
                            "raw_sum_resolution": raw.rel})
            rows = evaluation.energy_table(pred, truth_energy, min_events=10)
            for row in rows:
                metrics[f"resolution_bin/{row['e_lo']:.0f}-{row['e_hi']:.0f}GeV"] = row["resolution"]
            fit = evaluation.fit_table(rows)
            if fit:
                metrics.update({"energy_fit_S": fit["stochastic"], "energy_fit_C": fit["constant"]})
        else:
            truth = out["truth"][targets_lib.TARGET_FIELDS[name]]
            metrics[f"rms_{name}"] = float(np.sqrt(np.mean(np.square(pred - truth))))
    return metrics


def jit_steps(setup: Setup, graphdef, tx, schedule):
    """The train step (state donated, batch on the data axis, the rest replicated) and eval step,
    each compiled once per run; with tx None only the eval step (the train step is None)."""
    static = dict(graphdef=graphdef, target_spec=setup.target_spec, stats=setup.stats,
                  loss_weights=setup.loss_weights)
    eval_fn = jax.jit(functools.partial(steps.eval_step, **static), out_shardings=setup.repl)
    if tx is None:
        return None, eval_fn
    train_fn = jax.jit(
        functools.partial(steps.train_step, tx=tx, schedule=schedule, **static),
        in_shardings=(setup.repl, setup.batch_sharding, setup.repl, setup.repl, setup.repl),
        out_shardings=(setup.repl, setup.repl), donate_argnums=0)
    return train_fn, eval_fn


def initial_state(setup: Setup, tx):
    """(graphdef, state replicated on the mesh) of a freshly initialised model."""
    graphdef, state = steps.init_state(setup.build_model(), tx)
    return graphdef, jax.device_put(state, setup.repl)


def _check_finite(state: steps.TrainState, step: int) -> None:
    bad = int(jax.device_get(state.first_bad_step))
    if bad >= 0:
        raise FloatingPointError(f"non-finite loss or gradient at step {bad} (checked at step {step}); "
                                 f"the state kept the last finite update and no checkpoint holds a NaN")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict:
    """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns final metrics."""
    parallel.initialize()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from hgcal_jax import writers  # tensorboardX import is slow; only runs need it

    setup = Setup(config)
    tc = config.train
    tx, schedule = optim.make(config.optim, tc.steps)
    graphdef, state = initial_state(setup, tx)
    data = setup.train_iterator()
    mgr = checkpoint.manager(workdir, tc.keep_checkpoints)
    restored = checkpoint.restore_latest(mgr, state, data, config)
    start_step = 0
    if restored:
        start_step, state = restored[0], jax.device_put(restored[1], setup.repl)
        # Standardise exactly as before the interruption, whatever data.dir holds now.
        setup.stats = checkpoint.saved_stats(mgr, start_step) or setup.stats
    writers.write_config(workdir, config)
    writer = writers.MetricWriter(workdir, start_step=start_step)
    writer.text_config(config)

    train_fn, eval_fn = jit_steps(setup, graphdef, tx, schedule)
    root_key = jax.device_put(jax.random.key(config.seed), setup.repl)

    progress = writers.Progress(tc.steps, config.data.batch_size, start_step)
    last_log, last_wait, last_time = start_step, data.wait_s, time.perf_counter()
    metrics_host: dict = {}
    last_eval: dict | None = None
    profiling = False
    try:
        for step in range(start_step, tc.steps):
            if config.profile and step == tc.profile_start:
                jax.profiler.start_trace(str(workdir / "profile"))
                profiling = True
            batch = next(data)
            batch.pop("event_id", None)
            state, metrics = train_fn(state, batch, setup.table, setup.cell_weight, root_key)
            done = step + 1
            if profiling and done >= tc.profile_start + tc.profile_steps:
                jax.block_until_ready(state)
                jax.profiler.stop_trace()
                profiling = False
            if done % tc.log_every == 0 or done == tc.steps:
                metrics_host = {k: float(v) for k, v in jax.device_get(metrics).items()}
                _check_finite(state, done)
                now = time.perf_counter()
                metrics_host["events_per_s"] = (done - last_log) * config.data.batch_size / (now - last_time)
                metrics_host["input_wait_fraction"] = (data.wait_s - last_wait) / (now - last_time)
                metrics_host["truncated_hits"] = float(data.truncated)
                last_log, last_wait, last_time = done, data.wait_s, now
                writer.scalars(done, metrics_host, "train/")
                logging.info(progress.line(done, metrics_host))
            if tc.histogram_every and done % tc.histogram_every == 0 and jax.process_count() == 1:
                # Single process only: the example is read back from the globally sharded batch.
                writer.histograms(done, jax.device_get(state.params), "params")
                _write_saliency(writer, done, setup, graphdef, state, batch)
            if done % tc.eval_every == 0 or done == tc.steps:
                last_eval = evaluate(setup, eval_fn, state)
                writer.scalars(done, last_eval, "eval/")
            stopping = done == tc.stop_after
            if done % tc.checkpoint_every == 0 or done == tc.steps or stopping:
                _check_finite(state, done)
                checkpoint.save(mgr, done, state, data, config, setup.stats)
            if stopping:
                logging.info("stopping after step %d as asked (train.stop_after); rerun to resume", done)
                break
    finally:
        # Also on errors: finish pending (async) checkpoint writes, release the loader's workers.
        mgr.wait_until_finished()
        writer.flush()
        data.close()
    final = dict(last_eval) if last_eval is not None else evaluate(setup, eval_fn, state)
    final.update({f"train_{k}": v for k, v in metrics_host.items()})
    if jax.process_index() == 0:
        geometry_io.atomic_write(workdir / "final_metrics.json",
                                 lambda tmp: Path(tmp).write_text(json.dumps(final, indent=2)))
    writer.close()
    return {"metrics": final, "state": state, "graphdef": graphdef}


def _write_saliency(writer, step: int, setup: Setup, graphdef, state, batch) -> None:
    """The first example's input image (layer sum) and its energy saliency, for TensorBoard."""
    inputs = steps.prepare(setup.table, setup.cell_weight, batch, target_spec=setup.target_spec,
                           stats=setup.stats)
    first = jax.tree.map(lambda x: x[:1], (inputs.image, inputs.features))
    grad = saliency.gradient(graphdef, state.params, state.rest, *first, output=0)
    writer.image(step, "input/image_layer_sum", np.asarray(jnp.sum(first[0][0], axis=-1)))
    writer.image(step, "saliency/energy_gradient_x_input",
                 np.asarray(jnp.sum(jnp.abs(grad[0] * first[0][0]), axis=-1)))



def restore(workdir: str | Path, config: ml_collections.ConfigDict | None = None, step: int | None = None):
    """(setup, graphdef, state, step) of a trained run, for evaluation, saliency and plots.

    The config is the run's own (`checkpoints/<step>/config`) unless one is given; `step` defaults
    to the latest checkpoint. Raises FileNotFoundError naming the workdir if it has none.
    """
    import orbax.checkpoint as ocp

    mgr = checkpoint.manager(workdir, keep=1_000_000)
    step = mgr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"{workdir} holds no checkpoint (train first: scripts/train.py "
                                f"--workdir {workdir})")
    saved = mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    config = config or ml_collections.ConfigDict(saved)
    setup = Setup(config)
    setup.stats = checkpoint.saved_stats(mgr, step) or setup.stats  # as trained, not recomputed
    tx, _ = optim.make(config.optim, config.train.steps)
    graphdef, template = initial_state(setup, tx)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    state = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))).state
    return setup, graphdef, jax.device_put(state, setup.repl), step
