"""Evaluates a trained run against the classical baselines and writes the physics report.

  python scripts/evaluate.py --workdir runs/demo/train              # test split
  python scripts/evaluate.py --workdir runs/lstm --split val --out runs/lstm/report_val

Restores the latest checkpoint, predicts every event of the split, fits the calibrated
layer-weighted sum and the log-weighted barycentre on the train split, and writes
predictions.npz, report.json, report.md and PNG plots (default: WORKDIR/report_SPLIT).
"""

import logging

from absl import flags

from hgcal_jax import cli, evaluation, report

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run directory.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "Dataset split to evaluate.")
_OUT = flags.DEFINE_string("out", None, "Report directory (default WORKDIR/report_SPLIT).")


def main(argv):
    del argv
    logging.getLogger().setLevel(logging.INFO)
    result = evaluation.run(_WORKDIR.value, _SPLIT.value, _OUT.value)
    for name, entry in result["report"]["estimators"].items():
        fit = entry["all"].get("fit")
        if fit:
            print(f"{name:>10}: {report.fit_text(fit)}; endcaps "
                  f"{'agree' if entry['endcap_check']['agree'] else 'DISAGREE'}")
    print("wrote", result["paths"]["md"])


if __name__ == "__main__":
    cli.run(main)
