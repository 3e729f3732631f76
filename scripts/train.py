"""Trains a model: `python scripts/train.py --config configs/X.py[:variant] --workdir DIR`.

  python scripts/train.py --config configs/default.py --workdir runs/demo/train
  python scripts/train.py --config configs/rnn.py:lstm --workdir runs/lstm --config.optim.lr=3e-4
  XLA_FLAGS=--xla_force_host_platform_device_count=2 python scripts/train.py \
      --config configs/default.py:smoke --workdir /tmp/smoke   # 2 fake devices on a CPU

The same --workdir resumes from its latest checkpoint. Everything else is in
hgcal_jax.train.train_and_evaluate.
"""

import json
import logging

from absl import flags

from hgcal_jax import cli, train

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, TensorBoard, metrics).",
                               required=True)


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    result = train.train_and_evaluate(cli.config(), _WORKDIR.value)
    print(json.dumps(result["metrics"], indent=2))


if __name__ == "__main__":
    cli.run(main)
