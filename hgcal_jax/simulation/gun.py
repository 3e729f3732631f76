"""The particle gun: species, energy, direction and vertex of each simulated particle."""

from __future__ import annotations

import dataclasses

import numpy as np

from hgcal_jax.simulation.spec import PARTICLES, SimulationSpec


@dataclasses.dataclass(frozen=True)
class Particle:
    pid: int
    energy: float  # GeV
    eta: float  # signed: the sign is the endcap
    phi: float
    vertex: np.ndarray  # (3,) cm

    @property
    def zside(self) -> int:
        return 1 if self.eta > 0 else -1

    @property
    def direction(self) -> np.ndarray:
        """Unit vector along the momentum (cos theta = tanh eta)."""
        cos_t = np.tanh(self.eta)
        sin_t = np.sqrt(1.0 - cos_t**2)
        return np.array([sin_t * np.cos(self.phi), sin_t * np.sin(self.phi), cos_t])

    def position_at_z(self, z) -> np.ndarray:
        """(x, y) where the straight line from the vertex crosses the plane(s) z (cm)."""
        d = self.direction
        s = (np.asarray(z, dtype=np.float64) - self.vertex[2]) / d[2]
        return self.vertex[:2] + np.multiply.outer(s, d[:2])


def shoot(spec: SimulationSpec, rng: np.random.Generator) -> Particle:
    """Draws one particle."""
    pid = PARTICLES[spec.particles[rng.integers(len(spec.particles))]]
    if spec.energy_spectrum == "fixed":
        energy = spec.energy_min
    elif spec.energy_spectrum == "uniform":
        energy = rng.uniform(spec.energy_min, spec.energy_max)
    else:
        energy = float(np.exp(rng.uniform(np.log(spec.energy_min), np.log(spec.energy_max))))
    zside = spec.zsides[rng.integers(len(spec.zsides))]
    eta = zside * rng.uniform(spec.abs_eta_min, spec.abs_eta_max)
    phi = np.deg2rad(rng.uniform(spec.phi_min_deg, spec.phi_max_deg))
    vertex = np.array([rng.normal(0, spec.vertex_sigma_xy), rng.normal(0, spec.vertex_sigma_xy),
                       rng.normal(0, spec.vertex_sigma_z)])
    return Particle(pid=int(pid), energy=float(energy), eta=float(eta), phi=float(phi), vertex=vertex)
