"""Run outputs: TensorBoard event files, metrics.jsonl, config.json, and a progress line.

TensorBoard files are written with tensorboardX (no TensorFlow). Only process 0 writes.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np


class MetricWriter:
    """Scalars, histograms and images to TensorBoard and scalars to metrics.jsonl."""

    def __init__(self, workdir: str | Path, enabled: bool | None = None, start_step: int = 0):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.workdir = Path(workdir)
        self._tb = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            self.workdir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(str(self.workdir / "tb"), flush_secs=10)
            path = self.workdir / "metrics.jsonl"
            if path.is_file():
                # A resumed run redoes the steps after its checkpoint: drop their old rows.
                kept = [line for line in path.read_text().splitlines()
                        if line and json.loads(line).get("step", 0) <= start_step]
                path.write_text("".join(line + "\n" for line in kept))
            self._jsonl = open(path, "a")  # noqa: SIM115 (closed in close())

    def scalars(self, step: int, values: dict, prefix: str = "") -> None:
        if not self.enabled:
            return
        clean = {f"{prefix}{k}": float(v) for k, v in values.items()}
        for key, value in clean.items():
            self._tb.add_scalar(key, value, step)
        self._jsonl.write(json.dumps({"step": step, **{k: (v if math.isfinite(v) else str(v))
                                                       for k, v in clean.items()}}) + "\n")
        self._jsonl.flush()

    def histograms(self, step: int, tree, prefix: str) -> None:
        if not self.enabled:
            return
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            name = "/".join(str(getattr(p, "key", getattr(p, "name", p))) for p in path)
            self._tb.add_histogram(f"{prefix}/{name}", np.asarray(leaf).ravel(), step)

    def image(self, step: int, tag: str, image_HxW: np.ndarray) -> None:
        """A single-channel image, scaled to [0, 1] for display."""
        if not self.enabled:
            return
        x = np.asarray(image_HxW, np.float32)
        span = float(x.max() - x.min()) or 1.0
        self._tb.add_image(tag, ((x - x.min()) / span)[None], step, dataformats="CHW")

    def text_config(self, config: ml_collections.ConfigDict) -> None:
        if self.enabled:
            self._tb.add_text("config", "```\n" + str(config) + "\n```", 0)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def write_config(workdir: str | Path, config: ml_collections.ConfigDict) -> None:
    if jax.process_index() == 0:
        from hgcal_jax.geometry.io import atomic_write

        atomic_write(Path(workdir) / "config.json",
                     lambda tmp: Path(tmp).write_text(config.to_json_best_effort(indent=2)))


class Progress:
    """A log line with step, loss, events/s and ETA, every `every` steps."""

    def __init__(self, total_steps: int, batch_size: int, start_step: int = 0):
        self.total, self.batch = total_steps, batch_size
        self.start_step, self.start = start_step, time.perf_counter()

    def line(self, step: int, metrics: dict) -> str:
        elapsed = time.perf_counter() - self.start
        done = max(step - self.start_step, 1)
        rate = done * self.batch / max(elapsed, 1e-9)
        eta = (self.total - step) * elapsed / done
        return (f"step {step}/{self.total}  loss {metrics['loss']:.4f}  "
                + "  ".join(f"{k[4:]} {v:.4g}" for k, v in metrics.items() if k.startswith("rms_"))
                + f"  {rate:.0f} ev/s  ETA {eta / 60:.1f} min")
