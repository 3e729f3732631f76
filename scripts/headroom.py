"""What can a better energy estimate gain on a dataset? Classical estimates from the same events.

  python scripts/headroom.py --config configs/default.py:long
  python scripts/headroom.py --config configs/default.py --config.data.dir=runs/demo/data \
      --config.data.geometry=runs/demo/geometry.npz --json runs/demo/headroom.json

Fits on the train split, measures on --split (test), and prints S and C of:
- the calibrated layer-weighted sum (the report's classical baseline);
- the profile-corrected sum (`baselines.ProfileCorrection`: a polynomial in the early layers'
  shares of the signal, |eta| and the sum), a nonlinear classical estimate;
- an oracle: the layer-weight fit given each event's true upstream loss (simulation truth),
  which bounds what any correction of the upstream loss can reach.
It also prints the correlation of each event's upstream-loss fraction with the first layer's share
of its signal. A network that beats the calibrated sum should land between it and the oracle.
"""

import json
from pathlib import Path

import numpy as np
from absl import flags

from hgcal_jax import baselines, cli, evaluation, report
from hgcal_jax.data import shards
from hgcal_jax.geometry import io

_SPLIT = flags.DEFINE_string("split", "test", "Split to measure on.")
_JSON = flags.DEFINE_string("json", None, "Write the numbers here as JSON.")


def main(argv):
    del argv
    config = cli.config()
    data_dir = Path(config.data.dir)
    geometry = io.load(config.data.geometry or data_dir / "geometry.npz")
    layers = np.unique(geometry.layer)
    meta = shards.read_meta(data_dir)
    ref_layer = int(meta.get("simulation", {}).get("reference_layer", config.simulation.reference_layer))
    summary = {}
    for split in ("train", _SPLIT.value):
        paths, _ = shards.open_split(data_dir, split, io.content_hash(geometry))
        summary[split] = baselines.summarise(shards.iter_events(paths), geometry, layers, ref_layer)
        print(f"{split}: {len(summary[split].layer_sums):,} events", flush=True)
    train, test = summary["train"], summary[_SPLIT.value]
    e_train, e_test = (s.truth["energy"].astype(np.float64) for s in (train, test))
    eta_train, eta_test = (np.abs(s.truth["eta"].astype(np.float64)) for s in (train, test))

    estimates = {"calibrated sum": baselines.calibrated_sum(
        test.layer_sums, baselines.fit_layer_weights(train.layer_sums, e_train))}
    try:
        correction = baselines.ProfileCorrection.fit(train.layer_sums, eta_train, e_train)
        estimates["profile-corrected sum"] = correction.predict(test.layer_sums, eta_test)
    except ValueError as e:  # too few train events for the polynomial
        print(f"profile-corrected sum skipped: {e}")
    if "upstream_loss" in test.truth:
        share = test.layer_sums[:, 0] / np.maximum(test.layer_sums.sum(axis=1), 1e-9)
        corr = np.corrcoef(test.truth["upstream_loss"] / e_test, share)[0, 1]
        print(f"correlation of the upstream-loss fraction with the first layer's signal share: {corr:.2f}")
        with_loss = lambda s: np.column_stack([s.layer_sums, s.truth["upstream_loss"]])  # noqa: E731
        weights = baselines.fit_layer_weights(with_loss(train), e_train)
        estimates["oracle (true upstream loss)"] = baselines.calibrated_sum(with_loss(test), weights)

    results = {}
    for name, estimate in estimates.items():
        rows = evaluation.energy_table(estimate, e_test)
        fit = evaluation.fit_table(rows)
        results[name] = {"fit": fit, "resolution": {f"{r['e_lo']:.0f}-{r['e_hi']:.0f}": r["resolution"]
                                                    for r in rows}}
        print(f"{name:>28}: {report.fit_text(fit)}")
    if _JSON.value:
        io.atomic_write(_JSON.value, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=1)))


if __name__ == "__main__":
    cli.run(main)
