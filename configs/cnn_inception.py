"""Inception CNN: local (3D) and global (all layers) branches in each block, window images.

  python scripts/train.py --config configs/cnn_inception.py --workdir runs/cnn_inception
  python scripts/train.py --config configs/cnn_inception.py:smoke --workdir /tmp/inception_smoke

Measured result: not yet trained to completion (see README, "Configs").
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
