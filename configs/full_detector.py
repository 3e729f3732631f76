"""Full-detector images (542 x 548 x 40 at 0.7 cm, like the 2018 system's 514 x 513 x 40) and the
deeper residual CNN: a GPU config. On a CPU only the smoke variant is practical.

  python scripts/train.py --config configs/full_detector.py --workdir runs/full_detector
  python scripts/train.py --config configs/full_detector.py:smoke --workdir /tmp/full_smoke

Measured: on the 2-core CPU one train step of batch 32 takes 51 s (0.6 events/s, peak RSS
17.5 GB; `benchmarks/train_step.py --configs full_detector.py --sizes default`), so a training
needs a GPU; no GPU has been lent to this project yet, so there is no trained result.
`benchmarks/gpu.sh` times it on one.
"""

from pathlib import Path

from hgcal_jax import cli, models


def get_config(arg: str | None = None):
    smoke = arg == "smoke"
    if arg not in (None, "", "smoke"):
        raise ValueError(f"configs/full_detector.py: unknown variant {arg!r} (known: smoke)")
    config = cli.load(str(Path(__file__).with_name("default.py")) + (":smoke" if smoke else ""))
    config.interpolation.window = 0  # the full grid
    config.model = models.defaults("cnn_resnet")
    if smoke:
        config.model.widths = (8, 16)
        config.model.blocks = 1
        config.model.head_widths = (16,)
    config.data.batch_size = 4 if smoke else 32
    config.data.max_hits = 256 if smoke else 2048
    return config
