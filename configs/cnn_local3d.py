"""Local 3D CNN (small kernels in x, y and depth) on the default window images.

  python scripts/train.py --config configs/cnn_local3d.py --workdir runs/cnn_local3d
  python scripts/train.py --config configs/cnn_local3d.py:smoke --workdir /tmp/local3d_smoke

Measured result: not yet trained to completion (see README, "Configs").
"""

from pathlib import Path

from hgcal_jax import cli, models


def get_config(arg: str | None = None):
    config = cli.load(str(Path(__file__).with_name("default.py")) + (":smoke" if arg == "smoke" else ""))
    if arg not in (None, "", "smoke"):
        raise ValueError(f"configs/cnn_local3d.py: unknown variant {arg!r} (known: smoke)")
    config.model = models.defaults("cnn_local3d")
    if arg == "smoke":
        config.model.channels = (4, 8)
        config.model.head_widths = (16,)
    return config
