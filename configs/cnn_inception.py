"""Inception CNN: local (3D) and global (all layers) branches in each block, window images.

  python scripts/train.py --config configs/cnn_inception.py --workdir runs/cnn_inception
  python scripts/train.py --config configs/cnn_inception.py:smoke --workdir /tmp/inception_smoke

Measured (the short protocol of cnn_local3d.py, for CPU time: 250 steps of batch 64 on the
default dataset, `--config.train.steps=250 --config.optim.warmup_steps=50`, 24 min on 2 CPU cores
with the 3D convolutions unfolded, part of it beside a test run; test split of 4,000 events):
val sigma/E 4.20 %; test S = 26.0 +- 0.8 %, C = 0.77 +- 0.36 %, sigma/E 1.014 +- 0.031 of the
calibrated sum's; impact RMS 0.09-0.19 cm. (The global-z CNN under the same protocol: val 4.45 %,
S = 25.1 +- 0.8 %, 1.017 +- 0.034 of the sum's, 0.12-0.21 cm.)
"""

from pathlib import Path

from hgcal_jax import cli, models


def get_config(arg: str | None = None):
    config = cli.load(str(Path(__file__).with_name("default.py")) + (":smoke" if arg == "smoke" else ""))
    if arg not in (None, "", "smoke"):
        raise ValueError(f"configs/cnn_inception.py: unknown variant {arg!r} (known: smoke)")
    config.model = models.defaults("cnn_inception")
    if arg == "smoke":
        config.model.global_channels = (8,)
        config.model.local_channels = (4,)
        config.model.head_widths = (16,)
    return config
