"""Absorber and shower-medium constants of the simulated (v8-like) calorimeter.

Per-layer absorber in front of each silicon layer, in radiation lengths X0 at normal incidence.
CE-E (layers 1-28) is built of 14 double-sided cassettes: the absorber before an odd layer is
the thin one (Cu/CuW baseplate and PCB), before an even layer the thick one (Pb clad in steel);
both thicken with depth, as in the 2018 design, for 26.5 X0 in total:

    layers  1-10: 0.65 / 1.00 X0      layers 11-20: 0.70 / 1.15 X0      layers 21-28: 0.80 / 1.45 X0

CE-H front (FH, layers 29-40): 12 steel plates of ~4.1 cm plus services, 2.5 X0 each.
These are this project's choices, consistent with the public totals (CE-E ~26 X0, hgcal_facts.md);
CMSSW's real per-layer dE/dx weights differ in detail. A calibrated layer-weighted sum with
weights proportional to these thicknesses reconstructs the energy without bias.
"""

from __future__ import annotations

import numpy as np

# Effective CE-E medium (HGCAL-FastShower shower_cfg.py; Z_EFF is this project's choice for the
# Pb/Cu/W mix, used only in the GFlash parameterisation).
MOLIERE_RADIUS_CM = 2.3
CRITICAL_ENERGY_GEV = 5.36e-3
Z_EFF = 60.0
# Sampling-calorimeter terms of GFlash: F_s = sampling layers per X0, e_hat = e/mip ratio.
SAMPLING_FREQUENCY = 1.0 / 0.95
E_OVER_MIP = 0.8
# Silicon signal per GeV deposited in a 1 X0 absorber slice: 0.55 % sampling fraction of
# 1 GeV is 5.5 MeV = 100 MIPs of 55 keV (200 um silicon).
MIP_PER_GEV_AT_1X0 = 100.0


def _ee_absorbers() -> np.ndarray:
    thin_thick = [(0.65, 1.00)] * 5 + [(0.70, 1.15)] * 5 + [(0.80, 1.45)] * 4
    return np.array([x for pair in thin_thick for x in pair])


ABSORBER_X0 = np.concatenate([_ee_absorbers(), np.full(12, 2.5)])  # index = global layer - 1


def absorber_x0(layers) -> np.ndarray:
    """Absorber X0 in front of each given global layer (1-based)."""
    layers = np.asarray(layers)
    if layers.min() < 1 or layers.max() > len(ABSORBER_X0):
        raise ValueError(f"no absorber data for layers outside 1..{len(ABSORBER_X0)}")
    return ABSORBER_X0[layers - 1]
