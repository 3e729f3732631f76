"""The simulator: particle gun -> GFlash-style shower -> silicon cells -> digitised hits.

Per event (all vectorised over the shower's spots):
1. the gun draws a particle; its straight line from the vertex crosses each layer's z plane;
2. the depth axis starts at the particle's entry into the upstream material; layer k's silicon
   sits behind the upstream X0 plus the absorbers of layers 1..k, all divided by |cos theta|
   (oblique tracks cross more material). A spot at depth t deposits into the absorber slice of
   the first layer behind it; spots in the upstream material are lost (upstream loss), spots
   past the last layer leak (leakage);
3. a spot's silicon signal is `spot_energy x MIP_PER_GEV_AT_1X0 / absorber_X0(k)` MIPs: the
   sensor samples the energy density of its slice, so thin slices give more signal per GeV;
   the spot lands in the cell containing (axis + r (cos phi, sin phi)) on that layer;
4. readout: Gaussian noise (`noise_mip`) on every hit cell, noise-only hits above threshold in
   the cells within `noise_radius_cm` of the axis (their number drawn from the Gaussian tail
   probability, their cells by uniform points in the disc, i.e. proportional to area), zero
   suppression at `threshold_mip`, and the dead-cell map.

Hit energies are in MIPs (meta.json `energy_unit`).
"""

from __future__ import annotations

import functools
import logging

import numpy as np

from hgcal_jax.data import records, shards
from hgcal_jax.geometry import io as geometry_io
from hgcal_jax.geometry import types
from hgcal_jax.simulation import detector, gun, materials, shower
from hgcal_jax.simulation.spec import SimulationSpec


class Simulator:
    """Simulates events on one geometry; holds the cell locator and the dead-cell map."""

    def __init__(self, geometry: types.Geometry, spec: SimulationSpec | None = None):
        spec = spec or SimulationSpec()
        self.geometry = geometry
        self.spec = spec
        self.layers = np.array(sorted(geometry.layers()))
        if spec.reference_layer not in self.layers:
            raise ValueError(f"reference layer {spec.reference_layer} is not in the geometry")
        self.absorber = materials.absorber_x0(self.layers)
        layer_z = geometry.layer_z()
        self.z_abs = np.array([abs(layer_z.get((1, lay), layer_z.get((-1, lay), np.nan)))
                               for lay in self.layers])
        self.locator = detector.CellLocator(geometry)
        self.dead = detector.dead_cells(len(geometry), spec.dead_fraction, spec.dead_seed)
        self.mean_cell_area = float(np.mean(geometry.areas()))
        self.p_noise = detector.above_threshold_probability(spec.threshold_mip, spec.noise_mip)

    def event(self, rng: np.random.Generator, event_id: int = 0) -> records.Event:
        spec = self.spec
        particle = gun.shoot(spec, rng)
        zside = particle.zside
        cos_theta = abs(particle.direction[2])
        upstream = (spec.upstream_x0 + spec.upstream_eta_slope * (abs(particle.eta) - 1.5)
                    if spec.upstream else 0.0) / cos_theta
        # Depth (X0 from the upstream entry) of each layer's silicon; slice k = (edges[k], edges[k+1]].
        edges = upstream + np.concatenate([[0.0], np.cumsum(self.absorber / cos_theta)])
        profile = shower.draw_profile(particle.energy, particle.pid, rng)
        if not spec.leakage:  # contained shower: redraw depths beyond the last layer
            profile_end = edges[-1]
        depth, radius, azimuth = shower.draw_spots(particle.energy, profile, spec.spot_energy,
                                                   spec.max_radius_moliere, rng)
        if not spec.leakage:
            beyond = depth > profile_end
            while beyond.any():
                again, _, _ = shower.draw_spots(particle.energy, profile, spec.spot_energy,
                                                spec.max_radius_moliere, rng)
                again = again[again <= profile_end]
                take = min(len(again), int(beyond.sum()))
                idx = np.flatnonzero(beyond)[:take]
                depth[idx] = again[:take]
                beyond[idx] = False
        k = np.searchsorted(edges, depth, side="left") - 1  # slice index, -1 = upstream
        lost_up = depth <= edges[0]
        leaked = depth > edges[-1]
        keep = ~lost_up & ~leaked
        k, radius, azimuth = k[keep], radius[keep], azimuth[keep]
        axis_xy = particle.position_at_z(zside * self.z_abs)  # (L, 2)
        x = axis_xy[k, 0] + radius * np.cos(azimuth)
        y = axis_xy[k, 1] + radius * np.sin(azimuth)
        cells = self.locator.locate(x, y, self.layers[k], zside)
        signal_mip = spec.spot_energy * materials.MIP_PER_GEV_AT_1X0 / self.absorber[k]
        on_cell = cells >= 0
        hit_cells, inverse = np.unique(cells[on_cell], return_inverse=True)
        signal = np.bincount(inverse, weights=signal_mip[on_cell], minlength=len(hit_cells))
        deposited = float(signal.sum())
        measured = signal + rng.normal(0.0, spec.noise_mip, size=len(signal))
        noise_cells, noise_values = self._noise_hits(rng, axis_xy, zside)
        fresh = ~np.isin(noise_cells, hit_cells)
        cells_all = np.concatenate([hit_cells, noise_cells[fresh]])
        values = np.concatenate([measured, noise_values[fresh]])
        keep = (values > spec.threshold_mip) & ~self.dead[cells_all]
        cells_all, values = cells_all[keep], values[keep]

        g = self.geometry
        positive = np.maximum(values, 0.0)
        total = positive.sum()
        bary = (positive @ g.center[cells_all] / total) if total > 0 else np.full(3, np.nan)
        ref = int(np.flatnonzero(self.layers == spec.reference_layer)[0])
        truth = {
            "event_id": event_id, "pid": particle.pid, "zside": zside, "energy": particle.energy,
            "eta": particle.eta, "phi": particle.phi,
            "vertex_x": particle.vertex[0], "vertex_y": particle.vertex[1], "vertex_z": particle.vertex[2],
            "front_x": axis_xy[0, 0], "front_y": axis_xy[0, 1], "front_z": zside * self.z_abs[0],
            "impact_x": axis_xy[ref, 0], "impact_y": axis_xy[ref, 1], "impact_z": zside * self.z_abs[ref],
            "barycentre_x": bary[0], "barycentre_y": bary[1], "barycentre_z": bary[2],
            "deposited": deposited,
            "upstream_loss": spec.spot_energy * int(lost_up.sum()),
            "leakage": spec.spot_energy * int(leaked.sum()),
        }
        return records.make_event(cells_all, values, truth)

    def _noise_hits(self, rng, axis_xy, zside):
        """Noise-only hits above threshold around the shower axis, on every layer."""
        spec = self.spec
        if spec.noise_mip <= 0:
            return np.zeros(0, np.int64), np.zeros(0)
        n_cells = np.pi * spec.noise_radius_cm**2 / self.mean_cell_area
        counts = rng.poisson(n_cells * self.p_noise, size=len(self.layers))
        layer_idx = np.repeat(np.arange(len(self.layers)), counts)
        r = spec.noise_radius_cm * np.sqrt(rng.random(len(layer_idx)))
        phi = rng.uniform(0, 2 * np.pi, len(layer_idx))
        cells = self.locator.locate(axis_xy[layer_idx, 0] + r * np.cos(phi),
                                    axis_xy[layer_idx, 1] + r * np.sin(phi),
                                    self.layers[layer_idx], zside)
        values = detector.noise_tail(rng, len(cells), spec.threshold_mip, spec.noise_mip)
        ok = cells >= 0
        cells, values = cells[ok], values[ok]
        cells, first = np.unique(cells, return_index=True)  # one noise value per cell
        return cells, values[first]


@functools.lru_cache(maxsize=2)
def _worker_simulator(geometry_path: str, spec: SimulationSpec) -> Simulator:
    """One simulator per worker process (the KD-tree is built once, not per shard)."""
    return Simulator(geometry_io.load(geometry_path), spec)


def produce_shard(geometry_path: str, spec: SimulationSpec, task: shards.ShardTask):
    """Events of one shard (a picklable producer for `shards.write_dataset`)."""
    sim = _worker_simulator(geometry_path, spec)
    rng = np.random.default_rng(task.seed)
    for i in range(task.n_events):
        yield sim.event(rng, task.first_event_id + i)


def simulate_dataset(geometry_path: str, spec: SimulationSpec, out_dir: str,
                     split_events: dict[str, int], events_per_shard: int, seed: int,
                     workers: int = 1, progress: bool = True) -> dict:
    """Simulates train/val/test shards and meta.json (resumable: complete shards are kept)."""
    geometry_hash = geometry_io.stored_hash(geometry_path)
    tasks = shards.plan(split_events, events_per_shard, seed)
    logging.info("simulating %d events in %d shards with %d workers", sum(split_events.values()),
                 len(tasks), workers)
    meta = {"source": "simulation", "geometry_hash": geometry_hash, "energy_unit": "MIP",
            "simulation": _jsonable(spec), "seed": seed, "events_per_shard": events_per_shard}
    return shards.write_dataset(out_dir, tasks, functools.partial(produce_shard, geometry_path, spec),
                                meta, workers=workers, progress=progress)


def _jsonable(spec: SimulationSpec) -> dict:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}
