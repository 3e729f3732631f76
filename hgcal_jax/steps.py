"""Pure train and eval steps: hits -> image (on device) -> model -> loss -> optax update.

Each step is a module-level function of arrays; the static context (graphdef, optimiser, targets,
statistics) is bound with `functools.partial` and the result jitted once, with shardings and
donation, in `hgcal_jax.train`. Randomness is `fold_in(root_key, step)`.

A step whose loss or gradient is not finite does not update the state (so no NaN ever reaches
the parameters or a checkpoint) and records the first such step in `state.first_bad_step`; the
host checks it at every log and checkpoint step and raises FloatingPointError naming the step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from hgcal_jax import targets
from hgcal_jax.interpolation import operator


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 ()
    params: Any  # nnx.State of nnx.Param
    rest: Any  # nnx.State of everything else (BatchNorm statistics)
    opt_state: Any
    first_bad_step: jax.Array  # int32 (), -1 while every step was finite


class Inputs(NamedTuple):
    image: jax.Array  # (B, H, W, L)
    features: jax.Array  # (B, F)
    targets: jax.Array  # (B, T)
    centre: jax.Array | None  # (B, 2) window centre (cm), None for full-detector images
    raw_energy: jax.Array  # (B,) calibrated raw sum of the hits (GeV)
    dropped_energy: jax.Array  # (B,) hit energy outside the window


def prepare(table: operator.DeviceTable, cell_weight: jax.Array, batch: dict, *,
            target_spec: targets.TargetSpec, stats: dict) -> Inputs:
    """Interpolates the hits and builds the model inputs and targets of a batch.

    Features: the standardised log raw calibrated sum (energy is extensive; a window image alone
    does not say how much fell outside it), in window mode the window centre in metres (the
    absolute position the image does not show), and the longitudinal profile: each layer's
    fraction of the calibrated sum, exact, from all hits (the image has it only through log1p
    and pooling, yet it is what corrects upstream losses and leakage event by event).
    """
    out = operator.interpolate(table, batch["cells"], batch["energies"], batch["mask"])
    hits_gev = jnp.where(batch["mask"], batch["energies"] * cell_weight[batch["cells"]], 0.0)
    raw = jnp.maximum(hits_gev.sum(axis=1), 1e-6)
    log_raw = stats["log_raw_energy"]
    features = [((jnp.log(raw) - log_raw["mean"]) / log_raw["std"])[:, None]]
    grid = table.grid
    centre = None
    if grid.window:
        centre = out.origin_cm + 0.5 * grid.window * grid.pixel_cm
        features.append(centre / 100.0)
    layer_BxN = table.layer_index[batch["cells"]]
    profile = jax.vmap(lambda e, lay: jax.ops.segment_sum(e, lay, num_segments=grid.n_layers))(
        hits_gev, layer_BxN)
    features.append(profile / raw[:, None])
    y = target_spec.encode(batch["truth"], stats, centre=centre, raw_energy=raw, xp=jnp)
    return Inputs(out.image, jnp.concatenate(features, axis=1), y, centre, raw, out.dropped_energy)


def _weighted_mean(x_BxT, weight_B):
    return jnp.sum(x_BxT * weight_B[:, None], axis=0) / jnp.maximum(weight_B.sum(), 1.0)


def physical_errors(pred, inputs: Inputs, batch: dict, *, target_spec, stats) -> dict:
    """Per-example residuals in physical units: relative for energy, cm, or plain (eta, phi)."""
    decoded = target_spec.decode(pred, stats, centre=inputs.centre, raw_energy=inputs.raw_energy, xp=jnp)
    errors = {}
    for name, value in decoded.items():
        truth = batch["truth"][targets.TARGET_FIELDS[name]]
        errors[name] = value / truth - 1.0 if name == "energy" else value - truth
    return errors


def train_step(state: TrainState, batch: dict, table, cell_weight, root_key, *, graphdef,
               tx: optax.GradientTransformation, schedule, target_spec, stats,
               loss_weights: tuple[float, ...]) -> tuple[TrainState, dict]:
    """One optimisation step; returns the new state and device-side metrics."""
    inputs = prepare(table, cell_weight, batch, target_spec=target_spec, stats=stats)
    key = jax.random.fold_in(root_key, state.step)
    weights = jnp.asarray(loss_weights, jnp.float32)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, state.rest, copy=True)
        pred, _ = model(inputs.image, inputs.features, train=True, rngs=nnx.Rngs(dropout=key))
        per_target = _weighted_mean(jnp.square(pred - inputs.targets), batch["weight"])
        _, _, rest = nnx.split(model, nnx.Param, ...)
        return jnp.sum(weights * per_target) / jnp.sum(weights), (per_target, rest, pred)

    (loss, (per_target, rest, pred)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.tree.norm(grads)
    ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)  # noqa: E731
    new_state = TrainState(
        step=state.step + 1,
        params=keep(params, state.params),
        rest=keep(rest, state.rest),
        opt_state=keep(opt_state, state.opt_state),
        # 1-based, like the step numbers of the logs and checkpoints.
        first_bad_step=jnp.where((state.first_bad_step < 0) & ~ok, state.step + 1, state.first_bad_step),
    )
    metrics = {"loss": loss, "grad_norm": grad_norm, "param_norm": optax.tree.norm(params),
               "lr": schedule(state.step), "dropped_energy": inputs.dropped_energy.mean()}
    for name, value in zip(target_spec.names, per_target, strict=True):
        metrics[f"loss_{name}"] = value
    errors = physical_errors(pred, inputs, batch, target_spec=target_spec, stats=stats)
    for name, err in errors.items():
        metrics[f"rms_{name}"] = jnp.sqrt(_weighted_mean(jnp.square(err)[:, None], batch["weight"])[0])
    return new_state, metrics


def eval_step(state: TrainState, batch: dict, table, cell_weight, *, graphdef, target_spec,
              stats, loss_weights: tuple[float, ...] | None = None) -> dict:
    """Per-example predictions and truth in physical units (+z frame), with the batch weights;
    "loss" is the per-example training loss (the same per-target weights as `train_step`)."""
    inputs = prepare(table, cell_weight, batch, target_spec=target_spec, stats=stats)
    model = nnx.merge(graphdef, state.params, state.rest, copy=True)
    pred, _ = model(inputs.image, inputs.features, train=False)
    decoded = target_spec.decode(pred, stats, centre=inputs.centre, raw_energy=inputs.raw_energy, xp=jnp)
    per_target = jnp.square(pred - inputs.targets)
    weights = jnp.asarray(loss_weights if loss_weights is not None else (1.0,) * per_target.shape[1],
                          jnp.float32)
    return {
        "pred": decoded,
        "truth": batch["truth"],  # every truth field, +z frame
        "loss": per_target @ weights / jnp.sum(weights),
        "raw_energy": inputs.raw_energy,
        "zside": batch["zside"],
        "weight": batch["weight"],
    }


def init_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[Any, TrainState]:
    """(graphdef, TrainState at step 0) of a freshly built model."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                                opt_state=tx.init(params), first_bad_step=jnp.full((), -1, jnp.int32))
