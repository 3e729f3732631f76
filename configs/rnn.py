"""RNN over the calorimeter layers: a shared per-layer encoder, then an RNN, LSTM or GRU scan.

The cell is the variant, optionally with `smoke`: `rnn.py:lstm` (default), `rnn.py:gru`,
`rnn.py:rnn`, `rnn.py:lstm,smoke`. The head reads all layer steps (the 2018 fix for vanishing
gradients); forget-gate bias 1, LayerNorm on the sequence, AdamW with warmup.

  python scripts/train.py --config configs/rnn.py:lstm --workdir runs/lstm
  python scripts/train.py --config configs/rnn.py:gru,smoke --workdir /tmp/gru_smoke

Measured result: not yet trained to completion (see README, "Configs").
"""

from pathlib import Path

from hgcal_jax import cli, models

CELLS = ("lstm", "gru", "rnn")


def get_config(arg: str | None = None):
    parts = [p for p in (arg or "lstm").split(",") if p]
    unknown = [p for p in parts if p not in (*CELLS, "smoke")]
    if unknown:
        raise ValueError(f"configs/rnn.py: unknown variant {unknown} (known: {', '.join(CELLS)}, smoke)")
    smoke = "smoke" in parts
    cell = next((p for p in parts if p in CELLS), "lstm")
    config = cli.load(str(Path(__file__).with_name("default.py")) + (":smoke" if smoke else ""))
    config.model = models.defaults("rnn")
    config.model.cell = cell
    config.model.readout = "all"
    config.model.norm = "layer"
    config.model.hidden = 128
    if smoke:
        config.model.encoder_channels = (4,)
        config.model.embed = 8
        config.model.hidden = 16
        config.model.head_widths = (16,)
    return config
