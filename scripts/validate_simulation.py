"""Validates the shower simulator: profiles, containment, calibrated-sum resolution and its fit.

  python scripts/validate_simulation.py --config configs/default.py --out runs/validation
  python scripts/validate_simulation.py --config configs/default.py --out runs/validation_nuis \
      --with_nuisances --events 500

Writes longitudinal.png, containment.png, resolution.png and validation.json (fitted S and C,
per-energy response, sigma/E and shower maximum). Without --with_nuisances the upstream
material, leakage and dead cells are switched off (the intrinsic resolution).
"""

import json
from pathlib import Path

from absl import flags

from hgcal_jax import cli
from hgcal_jax.geometry import io, sources
from hgcal_jax.simulation import validation
from hgcal_jax.simulation.spec import SimulationSpec

_OUT = flags.DEFINE_string("out", "runs/validation", "Output directory.")
_GEOMETRY = flags.DEFINE_string("geometry", "", "Geometry .npz (default: build it from the config).")
_EVENTS = flags.DEFINE_integer("events", 300, "Events per energy point.")
_ENERGIES = flags.DEFINE_list("energies", ["10", "20", "50", "100", "200"], "Energies (GeV).")
_NUISANCES = flags.DEFINE_bool("with_nuisances", False, "Keep upstream material, leakage, dead cells.")


def main(argv):
    del argv
    config = cli.config()
    geometry = io.load(_GEOMETRY.value) if _GEOMETRY.value else sources.from_config(config.geometry)
    spec = SimulationSpec.from_config(config.simulation)
    if not _NUISANCES.value:
        spec = spec.without_nuisances()
    result = validation.validate(geometry, spec, [float(e) for e in _ENERGIES.value], _EVENTS.value,
                                 seed=config.seed)
    result["spec"] = {k: list(v) if isinstance(v, tuple) else v for k, v in vars(spec).items()}
    paths = validation.plot(result, _OUT.value)
    out = Path(_OUT.value) / "validation.json"
    io.atomic_write(out, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
    fit = result["fit"]
    for row in result["per_energy"]:
        print(f"{row['energy']:6.0f} GeV  response {row['response']:.3f}  sigma/E "
              f"{100 * row['sigma_over_e']:.2f} ± {100 * row['sigma_over_e_err']:.2f} %  "
              f"shower max {row['shower_max_x0']:.1f} X0")
    print(f"S = {100 * fit['stochastic']:.1f} ± {100 * fit['stochastic_err']:.1f} %/sqrt(GeV), "
          f"C = {100 * fit['constant']:.2f} ± {100 * fit['constant_err']:.2f} %  "
          f"(chi2/ndf {fit['chi2_ndf']:.2f})")
    print("wrote", ", ".join(str(p) for p in [*paths, out]))


if __name__ == "__main__":
    cli.run(main)
