"""The shower simulator: reproducible, physical, both endcaps, nuisances as switched."""

import dataclasses

import numpy as np
import pytest

from hgcal_jax.data import shards
from hgcal_jax.geometry import io, synthetic
from hgcal_jax.simulation import detector, materials, shower, simulator, validation
from hgcal_jax.simulation.spec import SimulationSpec

SECTOR = dict(phi_min_deg=5.0, phi_max_deg=25.0, abs_eta_min=1.9, abs_eta_max=2.5)


@pytest.fixture(scope="module")
def geometry():
    return synthetic.build(synthetic.SyntheticSpec(phi_min_deg=0.0, phi_max_deg=30.0))


@pytest.fixture(scope="module")
def sim(geometry):
    return simulator.Simulator(geometry, SimulationSpec(**SECTOR))


def test_same_seed_same_events(sim):
    a = [sim.event(np.random.default_rng(5), i) for i in range(3)]
    b = [sim.event(np.random.default_rng(5), i) for i in range(3)]
    assert a == b
    assert a[0] != sim.event(np.random.default_rng(6), 0)


def test_hits_are_on_the_particles_endcap_and_truth_is_consistent(sim, geometry):
    rng = np.random.default_rng(1)
    seen = set()
    for i in range(20):
        event = sim.event(rng, i)
        t = event.truth
        seen.add(t["zside"])
        assert np.sign(t["eta"]) == t["zside"]
        assert (geometry.zside[event.cells] == t["zside"]).all()
        assert (event.energies > sim.spec.threshold_mip).all()
        assert not sim.dead[event.cells].any()
        # The impact point lies on the straight line from the vertex.
        for prefix in ("front", "impact"):
            s = (t[f"{prefix}_z"] - t["vertex_z"]) / np.tanh(t["eta"])
            r = np.hypot(t[f"{prefix}_x"] - t["vertex_x"], t[f"{prefix}_y"] - t["vertex_y"])
            assert r == pytest.approx(abs(s) * np.sqrt(1 - np.tanh(t["eta"]) ** 2), rel=1e-4)
        assert t["impact_z"] == pytest.approx(t["zside"] * synthetic.LAYER_Z[9], abs=1e-3)
        # The shower's barycentre is near the line (within ~1 cm at these angles).
        assert np.hypot(t["barycentre_x"] - t["impact_x"], t["barycentre_y"] - t["impact_y"]) < 3.0
    assert seen == {1, -1}


def test_no_nuisances_means_no_losses(geometry):
    sim = simulator.Simulator(geometry, SimulationSpec(**SECTOR).without_nuisances())
    rng = np.random.default_rng(2)
    for i in range(10):
        t = sim.event(rng, i).truth
        assert t["upstream_loss"] == 0.0 and t["leakage"] == 0.0
    assert not sim.dead.any()


def test_upstream_material_loses_more_at_large_eta(geometry):
    losses = {}
    for eta in (1.9, 2.5):
        spec = SimulationSpec(**{**SECTOR, "abs_eta_min": eta, "abs_eta_max": eta},
                              particles=("e-",), energy_spectrum="fixed", energy_min=50.0)
        sim = simulator.Simulator(geometry, spec)
        rng = np.random.default_rng(3)
        losses[eta] = np.mean([sim.event(rng, i).truth["upstream_loss"] for i in range(60)])
    assert 0 < losses[1.9] < losses[2.5]


def test_leakage_switch(geometry):
    ee_only = geometry.select(geometry.layer <= 12)  # a short calorimeter leaks
    spec = SimulationSpec(**SECTOR, particles=("e-",), energy_spectrum="fixed", energy_min=100.0)
    leaky = simulator.Simulator(ee_only, spec)
    contained = simulator.Simulator(ee_only, dataclasses.replace(spec, leakage=False))
    rng = np.random.default_rng(4)
    assert np.mean([leaky.event(rng, i).truth["leakage"] for i in range(20)]) > 5.0
    assert all(contained.event(rng, i).truth["leakage"] == 0.0 for i in range(20))


def test_photons_start_deeper_than_electrons():
    rng = np.random.default_rng(5)
    e = [shower.draw_profile(50.0, 11, rng).start for _ in range(2000)]
    g = [shower.draw_profile(50.0, 22, rng).start for _ in range(2000)]
    assert np.mean(e) == 0.0
    assert np.mean(g) == pytest.approx(9 / 7, rel=0.1)


def test_shower_maximum_deepens_with_energy():
    t_max = [np.exp(shower.mean_parameters(e)[0]) for e in (10, 50, 100, 300)]
    assert np.all(np.diff(t_max) > 0)
    # Homogeneous-medium anchors of hgcal_facts.md: 6.7 / 8.3 X0 at 10 / 50 GeV, before the
    # sampling correction of -0.55/F_s - 0.69 (1 - e_hat).
    correction = 0.55 / materials.SAMPLING_FREQUENCY + 0.69 * (1 - materials.E_OVER_MIP)
    assert t_max[0] + correction == pytest.approx(6.7, abs=0.05)
    assert t_max[1] + correction == pytest.approx(8.3, abs=0.05)


def test_radial_profile_contains_90_percent_near_one_moliere_radius():
    rng = np.random.default_rng(6)
    profile = shower.Profile(alpha=4.0, t_max=7.0, start=0.0)
    _, radius, _ = shower.draw_spots(50.0, profile, 0.01, 7.0, rng)
    contained = np.mean(radius < materials.MOLIERE_RADIUS_CM)
    assert 0.8 < contained < 0.95


def test_locator_finds_the_containing_cell(geometry):
    loc = detector.CellLocator(geometry)
    rng = np.random.default_rng(7)
    rows = rng.choice(len(geometry), 500, replace=False)
    verts, count = geometry.polygons(rows)
    # A random point inside each cell: a convex combination of its centroid and one vertex.
    k = rng.integers(0, count)
    w = rng.uniform(0, 0.95, size=(len(rows), 1))
    points = (1 - w) * geometry.center[rows, :2] + w * verts[np.arange(len(rows)), k]
    found = loc.locate(points[:, 0], points[:, 1], geometry.layer[rows], geometry.zside[rows])
    np.testing.assert_array_equal(found, rows)
    assert loc.locate(np.array([0.0]), np.array([0.0]), np.array([1]), 1)[0] == -1  # beam hole


def test_noise_tail_is_above_threshold():
    values = detector.noise_tail(np.random.default_rng(8), 10000, 3.0, 1.0)
    assert values.min() > 3.0
    assert values.mean() == pytest.approx(3.283, abs=0.02)  # mean of the N(0,1) tail above 3


def test_simulated_dataset_resumes_identically(tmp_path, geometry):
    small = geometry.select(geometry.layer <= 12)
    geometry_path = tmp_path / "geometry.npz"
    io.save(small, geometry_path)
    spec = SimulationSpec(**SECTOR)
    splits = {"train": 12, "val": 4, "test": 4}
    simulator.simulate_dataset(str(geometry_path), spec, str(tmp_path / "a"), splits, 6, seed=3,
                               progress=False)
    (tmp_path / "a" / "train-00001-of-00002.arrayrecord").unlink()
    (tmp_path / "a" / "meta.json").unlink()
    meta = simulator.simulate_dataset(str(geometry_path), spec, str(tmp_path / "a"), splits, 6,
                                      seed=3, progress=False)
    simulator.simulate_dataset(str(geometry_path), spec, str(tmp_path / "b"), splits, 6, seed=3,
                               progress=False)
    for split in splits:
        a = list(shards.iter_events(shards.open_split(tmp_path / "a", split)[0]))
        b = list(shards.iter_events(shards.open_split(tmp_path / "b", split)[0]))
        assert a == b and len(a) == splits[split]
    assert meta["energy_unit"] == "MIP" and meta["geometry_hash"] == io.content_hash(small)


@pytest.mark.slow
def test_calibrated_sum_resolution_without_nuisances(geometry, tmp_path):
    spec = SimulationSpec(**SECTOR).without_nuisances()
    result = validation.validate(geometry, spec, energies=(10, 20, 50, 100, 200), n_events=200)
    fit = result["fit"]
    assert 0.15 < fit["stochastic"] < 0.30
    assert fit["constant"] < 0.02
    maxima = [row["shower_max_x0"] for row in result["per_energy"]]
    assert np.all(np.diff(maxima) > 0), maxima
    paths = validation.plot(result, tmp_path)
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_validation_measures_and_plots(geometry, tmp_path):
    """A small, fast run of the validation (the slow test above asserts the physics)."""
    spec = SimulationSpec(**SECTOR).without_nuisances()
    result = validation.validate(geometry, spec, energies=(20, 60, 150), n_events=15)
    assert [row["energy"] for row in result["per_energy"]] == [20, 60, 150]
    for row in result["per_energy"]:
        assert sum(row["profile"]) == pytest.approx(1.0)
        assert 0.5 < row["response"] < 1.5
        assert np.all(np.diff(row["containment"]) >= 0)
    paths = validation.plot(result, tmp_path)
    assert [p.name for p in paths] == ["longitudinal.png", "containment.png", "resolution.png"]
