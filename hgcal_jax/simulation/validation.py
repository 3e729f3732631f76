"""Validation of the simulator: profiles, containment and the calibrated-sum resolution.

`validate(geometry, spec, energies, n_events)` simulates fixed-energy electrons, and measures
- the mean longitudinal profile (fraction of the signal per layer and per X0) per energy and
  its depth of maximum in X0,
- the radial containment (fraction of the signal within r of the shower axis) per energy,
- the resolution of the calibrated sum E = sum_k w_k sum_cells MIP with the dE/dx weights
  w_k = absorber_X0(k) / MIP_PER_GEV_AT_1X0, and its fit S/sqrt(E) (+) C.
`plot(result, out_dir)` writes the three figures; the script saves `validation.json` beside them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from hgcal_jax import resolution
from hgcal_jax.geometry import types
from hgcal_jax.simulation import materials, simulator
from hgcal_jax.simulation.spec import SimulationSpec

RADII_CM = np.array([1.0, 2.0, 2.3, 3.0, 4.6, 6.0, 8.0])


def calibrated_sum_weights(geometry: types.Geometry) -> np.ndarray:
    """Per-cell dE/dx weights (GeV per MIP) of the simulated detector."""
    return materials.absorber_x0(geometry.layer) / materials.MIP_PER_GEV_AT_1X0


def validate(geometry: types.Geometry, spec: SimulationSpec, energies=(10, 20, 50, 100, 200),
             n_events: int = 300, seed: int = 0) -> dict:
    """Simulates `n_events` electrons per energy (nuisances as in `spec`) and measures them."""
    weights = calibrated_sum_weights(geometry)
    layers = np.array(sorted(geometry.layers()))
    depth_x0 = np.cumsum(materials.absorber_x0(layers))
    layer_pos = np.searchsorted(layers, geometry.layer)
    sim = None
    out = {"energies": list(map(float, energies)), "layers": layers.tolist(),
           "depth_x0": depth_x0.tolist(), "radii_cm": RADII_CM.tolist(), "per_energy": []}
    for energy in energies:
        fixed = dataclasses.replace(spec, particles=("e-",), energy_spectrum="fixed",
                                    energy_min=float(energy), energy_max=float(energy))
        if sim is None:
            sim = simulator.Simulator(geometry, fixed)
        sim.spec = fixed
        rng = np.random.default_rng([seed, int(energy * 1000)])
        profile = np.zeros(len(layers))
        contained = np.zeros(len(RADII_CM))
        reco = np.empty(n_events)
        for i in range(n_events):
            event = sim.event(rng, i)
            e = np.maximum(event.energies, 0.0) * weights[event.cells]
            reco[i] = float(np.sum(event.energies * weights[event.cells]))
            profile += np.bincount(layer_pos[event.cells], weights=e, minlength=len(layers)) / e.sum()
            # Distance to the shower axis on each cell's own layer.
            axis = _axis_at(event, geometry.z[event.cells])
            r = np.hypot(geometry.x[event.cells] - axis[:, 0], geometry.y[event.cells] - axis[:, 1])
            contained += np.array([e[r <= rad].sum() for rad in RADII_CM]) / e.sum()
        profile /= n_events
        per_x0 = profile / materials.absorber_x0(layers)  # density: signal per X0 of depth
        res = resolution.measure(reco / energy)
        out["per_energy"].append({
            "energy": float(energy), "profile": profile.tolist(),
            "shower_max_x0": float(_peak_depth(depth_x0, per_x0)),
            "containment": (contained / n_events).tolist(),
            "response": res.mean, "sigma_over_e": res.rel, "sigma_over_e_err": res.rel_err,
            "sigma_eff": res.sigma_eff,
        })
    rows = out["per_energy"]
    fit = resolution.fit([r["energy"] for r in rows], [r["sigma_over_e"] for r in rows],
                         [r["sigma_over_e_err"] for r in rows])
    out["fit"] = fit.as_dict()
    return out


def _axis_at(event, z) -> np.ndarray:
    """The particle's straight line at each z, from the truth (vertex and front-face impact)."""
    t = event.truth
    vertex = np.array([t["vertex_x"], t["vertex_y"], t["vertex_z"]])
    front = np.array([t["front_x"], t["front_y"], t["front_z"]])
    s = (np.asarray(z) - vertex[2]) / (front[2] - vertex[2])
    return vertex[:2] + np.outer(s, front[:2] - vertex[:2])


def _peak_depth(depth, density) -> float:
    """Depth of the maximum of a sampled profile, refined by a parabola through the top 3 points."""
    k = int(np.clip(np.argmax(density), 1, len(density) - 2))
    x, y = depth[k - 1: k + 2], density[k - 1: k + 2]
    a, b, _ = np.polyfit(x, y, 2)
    return float(-b / (2 * a)) if a < 0 else float(depth[k])


def plot(result: dict, out_dir: str | Path) -> list[Path]:
    """Writes longitudinal.png, containment.png and resolution.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    depth = np.array(result["depth_x0"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in result["per_energy"]:
        density = np.array(row["profile"]) / np.diff(np.concatenate([[0.0], depth]))
        ax.plot(depth, density, marker=".", label=f"{row['energy']:.0f} GeV "
                f"(max {row['shower_max_x0']:.1f} X0)")
    ax.set(xlabel="depth of the layer [X0]", ylabel="signal fraction per X0",
           title="Mean longitudinal profile, electrons")
    ax.legend()
    paths.append(_save(fig, out_dir / "longitudinal.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in result["per_energy"]:
        ax.plot(result["radii_cm"], row["containment"], marker="o", label=f"{row['energy']:.0f} GeV")
    ax.axvline(materials.MOLIERE_RADIUS_CM, color="grey", ls="--", label="Moliere radius")
    ax.set(xlabel="radius around the shower axis [cm]", ylabel="contained signal fraction",
           title="Radial containment", ylim=(0, 1.02))
    ax.legend()
    paths.append(_save(fig, out_dir / "containment.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    e = np.array([r["energy"] for r in result["per_energy"]])
    rel = np.array([r["sigma_over_e"] for r in result["per_energy"]])
    err = np.array([r["sigma_over_e_err"] for r in result["per_energy"]])
    fit = result["fit"]
    grid = np.geomspace(e.min() * 0.8, e.max() * 1.2, 100)
    ax.errorbar(e, 100 * rel, 100 * err, fmt="o", label="calibrated sum")
    ax.plot(grid, 100 * resolution.model(grid, fit["stochastic"], fit["constant"]),
            label=f"S = {100 * fit['stochastic']:.1f} ± {100 * fit['stochastic_err']:.1f} %, "
                  f"C = {100 * fit['constant']:.2f} ± {100 * fit['constant_err']:.2f} %")
    ax.set(xscale="log", xlabel="electron energy [GeV]", ylabel="σ(E)/E [%]",
           title="Calibrated-sum resolution")
    ax.legend()
    paths.append(_save(fig, out_dir / "resolution.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
