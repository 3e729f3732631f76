"""Optimisers and learning-rate schedules from the `config.optim` section."""

from __future__ import annotations

import ml_collections
import optax


def schedule(cfg: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr`, then cosine decay to `lr * final_fraction` or exponential decay."""
    warmup = int(cfg.warmup_steps)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
            decay_steps=max(total_steps, warmup + 1), end_value=cfg.lr * cfg.final_fraction)
    if cfg.schedule == "exponential":
        return optax.warmup_exponential_decay_schedule(
            init_value=0.0, peak_value=cfg.lr, warmup_steps=warmup,
            transition_steps=max(total_steps - warmup, 1), decay_rate=cfg.final_fraction,
            end_value=cfg.lr * cfg.final_fraction)
    if cfg.schedule == "constant":
        return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)),
                                     optax.constant_schedule(cfg.lr)], [warmup])
    raise ValueError(f"unknown optim.schedule {cfg.schedule!r}: use cosine, exponential or constant")


def make(cfg: ml_collections.ConfigDict, total_steps: int):
    """(optax transformation, schedule): gradient clipping, then AdamW, Adam or SGD."""
    lr = schedule(cfg, total_steps)
    if cfg.name == "adamw":
        opt = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay)
    elif cfg.name == "adam":
        opt = optax.adam(lr, b1=cfg.b1, b2=cfg.b2)
    elif cfg.name == "sgd":
        opt = optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.momentum > 0)
    else:
        raise ValueError(f"unknown optim.name {cfg.name!r}: use adamw, adam or sgd")
    chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
    return optax.chain(*chain, opt), lr
