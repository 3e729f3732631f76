"""Local 3D CNN (small kernels in x, y and depth) on the default window images.

  python scripts/train.py --config configs/cnn_local3d.py --workdir runs/cnn_local3d
  python scripts/train.py --config configs/cnn_local3d.py:smoke --workdir /tmp/local3d_smoke

Measured (a short protocol, for CPU time: 250 steps of batch 64 on the default dataset,
`--config.train.steps=250 --config.optim.warmup_steps=50`, 17 min on 2 CPU cores, part of it
beside a test run, with the 3D convolutions unfolded; test split of 4,000 events): val sigma/E
4.42 %; test S = 24.9 +- 0.8 %, C = 1.01 +- 0.27 %, sigma/E 0.991 +- 0.030 of the calibrated
sum's; impact RMS 0.18-0.27 cm.
The global-z CNN under the same protocol (1.5 min): val 4.45 %, S = 25.1 +- 0.8 %, C = 1.20 +-
0.24 %, 1.017 +- 0.034 of the sum's, impact RMS 0.12-0.21 cm.
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
