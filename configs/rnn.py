"""RNN over the calorimeter layers: a shared per-layer encoder, then an RNN, LSTM or GRU scan.

The cell is the variant, optionally with `smoke`: `rnn.py:lstm` (default), `rnn.py:gru`,
`rnn.py:rnn`, `rnn.py:lstm,smoke`. The head reads all layer steps (the 2018 fix for vanishing
gradients); forget-gate bias 1, LayerNorm on the sequence, AdamW with warmup.

  python scripts/train.py --config configs/rnn.py:lstm --workdir runs/lstm
  python scripts/train.py --config configs/rnn.py:gru,smoke --workdir /tmp/gru_smoke

Measured on the default dataset (20k train events), each cell 1,000 of 2,000 steps
(`--config.train.stop_after=1000`), test split of 4,000 events (`scripts/evaluate.py`); the
global-z CNN had val sigma/E 4.22 % at the same step, and its 2,000-step test ratio to the
calibrated sum is 0.988 +- 0.031:

  cell  time, 2 CPUs   val sigma/E   test S, C                       sigma/E over the sum's   impact RMS
  lstm  15 min          4.41 %        25.1 +- 0.9 %, 1.33 +- 0.23 %   1.034 +- 0.032           0.10-0.19 cm
  gru   10 min          4.37 %        24.8 +- 0.9 %, 1.48 +- 0.22 %   1.041 +- 0.033           0.11-0.19 cm
  rnn   10 min          4.42 %        26.0 +- 0.9 %, 1.29 +- 0.24 %   1.058 +- 0.031           0.12-0.22 cm

All three train (the 2018 LSTM did not) and land within 5 % of the CNN; half-trained, none beats
the calibrated sum yet.
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
