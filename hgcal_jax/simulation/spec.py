"""`SimulationSpec`: every knob of the simulator, with its documented default."""

from __future__ import annotations

import dataclasses

import ml_collections

PARTICLES = {"e-": 11, "e+": -11, "gamma": 22}


@dataclasses.dataclass(frozen=True)
class SimulationSpec:
    """Particle gun, shower and detector-response parameters.

    Nuisances (what a network can learn to correct and a plain sum cannot), each a switch:
      upstream: material before layer 1 (tracker, services, thermal screen),
        `upstream_x0 + upstream_eta_slope * (|eta| - 1.5)` radiation lengths at normal incidence
        (2.2 X0 at |eta| = 1.6, 4.6 X0 at 2.8), crossed along the track, i.e. times 1/|cos theta|
        like every absorber: the shower energy deposited there is lost, a fluctuating 1-10 % of it.
        Default on.
      leakage: energy past the last layer of the geometry is lost. Off: the longitudinal profile is
        truncated at the last layer and renormalised (a perfectly contained shower). Default on.
      dead_fraction: fraction of cells that are dead (a fixed map drawn from `dead_seed`, the same
        for every event); their hits are dropped. Default 0.01.
    """

    particles: tuple[str, ...] = ("e-", "e+", "gamma")
    energy_spectrum: str = "log-uniform"  # fixed | uniform | log-uniform
    energy_min: float = 10.0  # GeV
    energy_max: float = 200.0  # GeV (the fixed energy is energy_min)
    abs_eta_min: float = 1.6
    abs_eta_max: float = 2.8
    zsides: tuple[int, ...] = (1, -1)
    phi_min_deg: float = -180.0  # restrict for geometries that cover a phi sector only
    phi_max_deg: float = 180.0
    vertex_sigma_z: float = 5.0  # cm
    vertex_sigma_xy: float = 0.002  # cm
    reference_layer: int = 10  # the 2018 labels' impact layer
    spot_energy: float = 0.22**2  # GeV per spot: a 22 %/sqrt(E) Poisson sampling term
    max_radius_moliere: float = 7.0  # radial draws cut at this many Moliere radii
    noise_mip: float = 1.0  # Gaussian noise per cell (MIP)
    threshold_mip: float = 3.0  # zero suppression: keep cells above this (MIP), i.e. 3 sigma
    noise_radius_cm: float = 12.0  # noise-only hits are drawn within this radius of the axis
    upstream: bool = True
    upstream_x0: float = 2.0
    upstream_eta_slope: float = 2.0
    leakage: bool = True
    dead_fraction: float = 0.01
    dead_seed: int = 12345

    def __post_init__(self):
        unknown = set(self.particles) - set(PARTICLES)
        if unknown or not self.particles:
            raise ValueError(f"unknown particles {sorted(unknown)}; known: {sorted(PARTICLES)}")
        if self.energy_spectrum not in ("fixed", "uniform", "log-uniform"):
            raise ValueError("energy_spectrum must be fixed, uniform or log-uniform, "
                             f"got {self.energy_spectrum!r}")
        if not 0 < self.energy_min <= self.energy_max:
            raise ValueError("need 0 < energy_min <= energy_max")
        if not 0 < self.abs_eta_min <= self.abs_eta_max:
            raise ValueError("need 0 < abs_eta_min <= abs_eta_max")
        if not 0 <= self.dead_fraction < 1:
            raise ValueError("dead_fraction must be in [0, 1)")

    def without_nuisances(self) -> SimulationSpec:
        return dataclasses.replace(self, upstream=False, leakage=False, dead_fraction=0.0)

    @classmethod
    def from_config(cls, cfg: ml_collections.ConfigDict) -> SimulationSpec:
        """From a `config.simulation` section (string lists are comma-separated)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in cfg.items() if k in names}
        if isinstance(kwargs.get("particles"), str):
            kwargs["particles"] = tuple(p.strip() for p in kwargs["particles"].split(",") if p.strip())
        if isinstance(kwargs.get("zsides"), str):
            from hgcal_jax.geometry.sources import parse_zsides

            kwargs["zsides"] = parse_zsides(kwargs["zsides"])
        return cls(**kwargs)
