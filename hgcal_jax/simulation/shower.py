"""Parametrised electromagnetic showers (Grindhammer-Peters / GFlash, hep-ex/0001020).

A shower is a Poisson number of energy spots of `spot_energy` each (so the visible energy has
a stochastic term sqrt(spot_energy / E), 22 %/sqrt(E) by default). Each spot gets:
- a depth t (X0) from the shower's longitudinal Gamma profile, whose shape alpha and depth of
  maximum T fluctuate from shower to shower as correlated log-normals (sampling-calorimeter
  parameterisation, with the F_s and e/mip corrections). Photons first travel an exponential
  conversion depth with mean 9/7 X0 (so they start ~1 X0 deeper than electrons);
- a radius from the two-component (core + tail) radial profile at its relative depth t/T, drawn
  by the inverse CDF r = R sqrt(u / (1 - u)) of the chosen component, in Moliere radii;
- an azimuth uniform in [0, 2 pi).
All formulas and constants: ../shared/hgcal_facts.md (values from Geant4's gflash).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hgcal_jax.simulation import materials

Z = materials.Z_EFF


@dataclasses.dataclass(frozen=True)
class Profile:
    """One shower's longitudinal parameters."""

    alpha: float
    t_max: float  # depth of the maximum (X0), T = (alpha - 1) / beta
    start: float  # depth (X0) where the shower starts (0 for e+-, the conversion depth for photons)

    @property
    def beta(self) -> float:
        return (self.alpha - 1.0) / self.t_max


def mean_parameters(energy: float) -> tuple[float, float, float, float, float]:
    """(<ln T>, <ln alpha>, sigma ln T, sigma ln alpha, rho) of the sampling parameterisation."""
    ln_y = np.log(energy / materials.CRITICAL_ENERGY_GEV)
    t_hom = ln_y - 0.812
    alpha_hom = 0.81 + (0.458 + 2.26 / Z) * ln_y
    f_s, e_hat = materials.SAMPLING_FREQUENCY, materials.E_OVER_MIP
    t_sam = t_hom - 0.55 / f_s - 0.69 * (1.0 - e_hat)
    alpha_sam = alpha_hom - 0.476 / f_s
    sigma_t = 1.0 / (-2.5 + 1.25 * ln_y)
    sigma_a = 1.0 / (-0.82 + 0.79 * ln_y)
    rho = 0.784 - 0.023 * ln_y
    return np.log(t_sam), np.log(alpha_sam), sigma_t, sigma_a, rho


def draw_profile(energy: float, pid: int, rng: np.random.Generator) -> Profile:
    """Draws one shower's (alpha, T) with their correlated fluctuations, and its start depth."""
    mu_t, mu_a, sigma_t, sigma_a, rho = mean_parameters(energy)
    z1, z2 = rng.standard_normal(2)
    ln_t = mu_t + sigma_t * z1
    ln_a = mu_a + sigma_a * (rho * z1 + np.sqrt(max(1.0 - rho**2, 0.0)) * z2)
    alpha = max(float(np.exp(ln_a)), 1.05)  # a Gamma profile needs alpha > 1 to have a maximum
    start = float(rng.exponential(9.0 / 7.0)) if pid == 22 else 0.0
    return Profile(alpha=alpha, t_max=float(np.exp(ln_t)), start=start)


def radial_components(energy: float, tau: np.ndarray):
    """(R_core, R_tail, p_core) at relative depths tau = t / T, in Moliere radii."""
    ln_e = np.log(energy)
    r_core = 0.0251 + 0.00319 * ln_e + (0.1162 - 0.000381 * Z) * tau
    k1, k2, k3, k4 = 0.659 - 0.00309 * Z, 0.645, -2.59, 0.3585 + 0.0412 * ln_e
    r_tail = k1 * (np.exp(k3 * (tau - k2)) + np.exp(k4 * (tau - k2)))
    p1, p2, p3 = 2.632 - 0.00094 * Z, 0.401 + 0.00187 * Z, 1.313 - 0.0686 * ln_e
    x = (p2 - tau) / p3
    p_core = np.clip(p1 * np.exp(x - np.exp(x)), 0.0, 1.0)
    return r_core, r_tail, p_core


def draw_spots(energy: float, profile: Profile, spot_energy: float, max_radius: float,
               rng: np.random.Generator):
    """Spots of one shower: (depth_X0 along the axis from the shower's entry, radius_cm, azimuth)."""
    n = rng.poisson(energy / spot_energy)
    depth = profile.start + rng.gamma(profile.alpha, 1.0 / profile.beta, size=n)
    tau = (depth - profile.start) / profile.t_max
    r_core, r_tail, p_core = radial_components(energy, tau)
    scale = np.where(rng.random(n) < p_core, r_core, r_tail)
    # Inverse CDF of 2 r R^2 / (r^2 + R^2)^2, truncated at max_radius Moliere radii.
    u_max = max_radius**2 / (max_radius**2 + scale**2)
    u = rng.random(n) * u_max
    radius = scale * np.sqrt(u / (1.0 - u)) * materials.MOLIERE_RADIUS_CM
    return depth, radius, rng.uniform(0.0, 2 * np.pi, n)
