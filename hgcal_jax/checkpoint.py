"""Orbax checkpoints of a run: train state, Grain iterator state and config, in one step dir.

`workdir/checkpoints/<step>/{state,data,config}`; the same workdir resumes from the latest
complete checkpoint (Orbax commits a step atomically, so a run killed mid-save leaves the previous
one intact). Restoring into a workdir whose checkpoint holds another model, other targets or
another image grid is an error naming the differing config keys.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp

# Config sections that define the shapes and meaning of the saved state: they must match.
# (The cache directory is where tables are kept, not what they are: moving it is allowed.)
STATE_DEFINING = ("model", "targets", "interpolation.pixel_cm", "interpolation.window", "geometry",
                  "optim", "train.steps", "seed", "data.batch_size", "data.max_hits")
# Keys inside those sections that choose how, not what, is computed (and may be absent from the
# configs of older checkpoints): a run may resume with another value, e.g. on a GPU after a CPU.
IMPLEMENTATION_ONLY = frozenset({"model.conv3d"})


class CheckpointMismatchError(ValueError):
    """The workdir's checkpoint was written by a run with an incompatible config."""


def manager(workdir: str | Path, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        Path(workdir).resolve() / "checkpoints",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       "config": ocp.JsonCheckpointHandler(),
                       "stats": ocp.JsonCheckpointHandler()},
    )


def save(mgr: ocp.CheckpointManager, step: int, state, data_iterator, config: ml_collections.ConfigDict,
         stats: dict):
    """One checkpoint: state, data iterator, config and the normalisation statistics (inputs and
    targets are standardised with them, so a restore must not recompute them from other data)."""
    mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data=grain.checkpoint.CheckpointSave(data_iterator),
        config=ocp.args.JsonSave(config.to_dict()),
        stats=ocp.args.JsonSave(stats)), force=True)


def saved_stats(mgr: ocp.CheckpointManager, step: int) -> dict | None:
    """The statistics stored with a checkpoint (None for checkpoints written without them)."""
    try:
        return mgr.restore(step, args=ocp.args.Composite(stats=ocp.args.JsonRestore())).stats
    except (KeyError, ValueError, FileNotFoundError):
        return None


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def check_compatible(saved: dict, config: ml_collections.ConfigDict, where: str) -> None:
    """Raises CheckpointMismatchError if a state-defining config key differs."""
    now = _flatten(config.to_dict())
    then = _flatten(saved)
    differing = sorted(
        k for k in set(now) | set(then)
        if any(k == s or k.startswith(s + ".") for s in STATE_DEFINING) and k not in IMPLEMENTATION_ONLY
        and now.get(k) != then.get(k))
    if differing:
        details = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in differing[:6])
        raise CheckpointMismatchError(
            f"{where} holds a checkpoint of another setup ({details}); use another --workdir "
            f"or delete it")


def restore_latest(mgr: ocp.CheckpointManager, state_template, data_iterator,
                   config: ml_collections.ConfigDict) -> tuple[int, Any] | None:
    """(step, state) from the latest checkpoint, with the iterator restored in place; or None."""
    step = mgr.latest_step()
    if step is None:
        return None
    saved_config = mgr.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore())).config
    check_compatible(saved_config, config, str(mgr.directory))
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_template)
    restored = mgr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract),
        data=grain.checkpoint.CheckpointRestore(data_iterator)))
    logging.info("resumed from %s step %d", mgr.directory, step)
    return step, restored.state
