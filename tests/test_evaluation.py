"""Evaluation: the fits recover known parameters, baselines recover known weights, the report
is written, plots decode, and the endcap check flags a mirrored-geometry bug."""

import json

import numpy as np
import pytest
from PIL import Image

from hgcal_jax import baselines, evaluation, report, resolution


def synthetic_predictions(rng, n=40000, s=0.2, c=0.01, bias_minus_z=0.0):
    energy = np.exp(rng.uniform(np.log(10), np.log(200), n))
    zside = rng.choice([1, -1], n)
    sigma = np.sqrt(s**2 / energy + c**2)
    pred = energy * (1 + sigma * rng.standard_normal(n))
    truth = {"energy": energy, "impact_x": rng.normal(0, 50, n), "impact_y": rng.normal(0, 50, n),
             "impact_z": np.full(n, 330.0), "zside": zside}
    x = truth["impact_x"] + rng.normal(0, 0.3, n) + bias_minus_z * (zside < 0)
    return {"energy": pred, "impact_x": x, "impact_y": truth["impact_y"] + rng.normal(0, 0.3, n)}, truth


def test_fit_recovers_known_stochastic_and_constant_terms():
    est, truth = synthetic_predictions(np.random.default_rng(0), s=0.22, c=0.008)
    out = evaluation.evaluate({"model": est}, truth)
    fit = out["estimators"]["model"]["all"]["fit"]
    assert fit["stochastic"] == pytest.approx(0.22, abs=3 * fit["stochastic_err"] + 0.003)
    assert fit["constant"] == pytest.approx(0.008, abs=3 * fit["constant_err"] + 0.001)
    for row in out["estimators"]["model"]["all"]["energy"]:
        assert row["response"] == pytest.approx(1.0, abs=4 * row["response_err"])


def test_fit_with_noise_term():
    rng = np.random.default_rng(1)
    energy = np.repeat([10.0, 20, 40, 80, 160], 1)
    rel = resolution.model(energy, 0.2, 0.01, 0.5)
    fit = resolution.fit(energy, rel, rel * 0.01, with_noise=True)
    assert (fit.stochastic, fit.constant, fit.noise) == pytest.approx((0.2, 0.01, 0.5), rel=0.05)
    del rng


def test_gaussian_core_ignores_tails():
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.normal(1.0, 0.03, 20000), rng.uniform(0.6, 0.95, 1500)])
    core = resolution.gaussian_core(x)
    assert core.sigma == pytest.approx(0.03, rel=0.05)
    assert core.mean == pytest.approx(1.0, abs=0.002)


def test_paired_comparison_finds_a_better_estimator_and_not_an_equal_one():
    rng = np.random.default_rng(5)
    good, truth = synthetic_predictions(rng, n=8000, s=0.20, c=0.005)
    # The reference shares the good estimator's fluctuation (same events, as a network and the
    # calibrated sum do) plus an independent part: 25 % worse in every bin.
    extra = np.sqrt(1.25**2 - 1) * np.sqrt(0.20**2 / truth["energy"] + 0.005**2)
    worse = good["energy"] + truth["energy"] * extra * rng.standard_normal(len(truth["energy"]))
    good["energy"][:7] = np.nan  # a model that fails on some events is judged on the others only
    out = evaluation.compare({"good": {"energy": good["energy"]}, "ref": {"energy": worse},
                              "same": {"energy": worse.copy()}}, truth, reference="ref", resamples=40)
    assert out["nonfinite"] == 7 and out["estimators"]["good"]["resamples_used"] == 40
    good_vs_ref = out["estimators"]["good"]
    assert good_vs_ref["better"]
    assert good_vs_ref["mean_ratio"] == pytest.approx(0.8, abs=max(3 * good_vs_ref["mean_ratio_err"], 0.02))
    assert good_vs_ref["delta_stochastic"] < 0
    same = out["estimators"]["same"]
    assert same["mean_ratio"] == pytest.approx(1.0)
    assert same["mean_ratio_err"] == pytest.approx(0.0, abs=1e-12)
    assert not same["better"]
    assert len(good_vs_ref["bins"]) == len(evaluation.ENERGY_BINS) - 1


def test_calibrated_sum_recovers_known_layer_weights():
    rng = np.random.default_rng(3)
    true_weights = np.array([0.0065, 0.01, 0.0115, 0.0145, 0.025])
    energy = rng.uniform(10, 200, 5000)
    shares = rng.dirichlet(np.ones(5) * 3, size=5000)
    layer_sums = energy[:, None] * shares / true_weights * (1 + 0.01 * rng.standard_normal((5000, 5)))
    layer_sums += 0.5 / true_weights  # a noise pedestal of 0.5 GeV in every layer
    weights = baselines.fit_layer_weights(layer_sums, energy)
    np.testing.assert_allclose(weights[1:], true_weights, rtol=0.02)
    assert weights[0] == pytest.approx(-2.5, abs=0.1)  # the offset removes the pedestal


def test_log_weighted_barycentre_beats_linear_weights():
    # A narrow shower on 1 cm cells: the linear barycentre is pulled to the central cell.
    rng = np.random.default_rng(4)
    n, cells = 400, np.stack(np.meshgrid(np.arange(-3, 4.0), np.arange(-3, 4.0)), -1).reshape(-1, 2)
    truth_xy = rng.uniform(-0.5, 0.5, (n, 2))
    energies = np.exp(-np.linalg.norm(cells[None] - truth_xy[:, None], axis=2) / 0.4)
    s = baselines.EventSummaries(
        layer_sums=energies.sum(1, keepdims=True),
        truth={"impact_x": truth_xy[:, 0], "impact_y": truth_xy[:, 1], "energy": np.ones(n)},
        ref_offsets=np.arange(n + 1) * len(cells), ref_energy=energies.ravel(),
        ref_xy=np.tile(cells, (n, 1)).astype(float))
    w0, rms = baselines.tune_w0(s)
    linear = (energies[..., None] * cells).sum(1) / energies.sum(1, keepdims=True)
    linear_rms = np.sqrt(np.mean(np.sum((linear - truth_xy) ** 2, 1)))
    assert rms.min() < 0.7 * linear_rms
    assert 2.0 <= w0 <= 7.0


def test_endcap_check_flags_a_biased_endcap():
    rng = np.random.default_rng(5)
    good = evaluation.evaluate({"m": synthetic_predictions(rng)[0]}, synthetic_predictions(rng)[1])
    est, truth = synthetic_predictions(np.random.default_rng(6), bias_minus_z=1.0)
    bad = evaluation.evaluate({"m": est}, truth)
    assert bad["estimators"]["m"]["endcap_check"]["agree"] is False
    assert bad["estimators"]["m"]["endcap_check"]["max_abs_pull"] > 5
    del good


def test_report_files_and_plots(tmp_path):
    est, truth = synthetic_predictions(np.random.default_rng(7), n=6000)
    truth["eta"] = np.random.default_rng(9).uniform(1.6, 2.8, 6000)
    classical = {"energy": truth["energy"] * (1 + 0.05 * np.random.default_rng(8).standard_normal(6000)),
                 "impact_x": est["impact_x"] + 0.2, "impact_y": est["impact_y"]}
    estimates = {"model": est, "classical": classical}
    numbers = evaluation.evaluate(estimates, truth)
    numbers["comparison"] = evaluation.comparison(estimates, truth, resamples=20)
    paths = report.write(numbers, {"truth": truth, "estimates": estimates,
                                   "event_id": np.arange(6000)}, {"split": "test", "step": 1}, tmp_path)
    doc = json.loads(paths["json"].read_text())
    assert set(doc["estimators"]) == {"model", "classical"}
    for endcap in ("all", "+z", "-z"):
        assert doc["estimators"]["model"][endcap]["fit"]["stochastic"] > 0
    assert [row["eta_lo"] for row in doc["comparison"]["by_abs_eta"]] == list(evaluation.ETA_BINS[:-1])
    text = paths["md"].read_text()
    assert "S = " in text and "![resolution](resolution.png)" in text
    assert "relative to `classical`" in text and "Per |η| bin" in text
    for name in ("response", "resolution", "endcaps", "position", "angles", "residuals",
                 "pred_vs_truth", "ratio"):
        with Image.open(tmp_path / f"{name}.png") as image:
            image.load()
            assert image.width > 300 and image.height > 200
    with np.load(paths["predictions"]) as npz:
        assert {"truth_energy", "model_energy", "classical_impact_x", "event_id"} <= set(npz.files)


def test_evaluate_script_on_a_trained_smoke_run(tmp_path):
    import subprocess
    import sys

    from hgcal_jax import train
    from tests.train_helpers import REPO, make_dataset, smoke_config

    data = make_dataset(tmp_path / "data")
    train.train_and_evaluate(smoke_config(data, tmp_path / "cache", train__histogram_every=0),
                             tmp_path / "run")
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "evaluate.py"), "--workdir",
                           str(tmp_path / "run"), "--split", "test"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path / "run" / "report_test"
    doc = json.loads((out / "report.json").read_text())
    assert doc["meta"]["events"] == 16 and doc["meta"]["step"] == 2
    assert (out / "report.md").is_file() and (out / "resolution.png").stat().st_size > 1000
    with np.load(out / "predictions.npz") as npz:
        assert len(npz["event_id"]) == 16


def test_profile_correction_recovers_a_nonlinear_upstream_loss():
    # Showers that start early (a large first-layer share f) lose more upstream, nonlinearly in f;
    # the linear layer weights correct part of it, the profile correction (nearly) all.
    rng = np.random.default_rng(11)
    n = 20000
    energy = np.exp(rng.uniform(np.log(10), np.log(200), n))
    f = rng.beta(2, 8, n)  # first-layer share
    seen = energy * (1 - 1.0 * f**2) * (1 + 0.01 * rng.standard_normal(n))
    layer_sums = np.column_stack([f * seen, (1 - f) * seen]) / 0.01  # hit units
    abs_eta = rng.uniform(1.6, 2.8, n)
    train, test = slice(0, n // 2), slice(n // 2, n)
    linear = baselines.calibrated_sum(layer_sums[test], baselines.fit_layer_weights(layer_sums[train],
                                                                                     energy[train]))
    corr = baselines.ProfileCorrection.fit(layer_sums[train], abs_eta[train], energy[train], n_layers=1)
    profile = corr.predict(layer_sums[test], abs_eta[test])
    spread = {name: np.std(est / energy[test]) for name, est in (("linear", linear), ("profile", profile))}
    assert spread["profile"] < 0.5 * spread["linear"]
    assert 0.0095 < spread["profile"] < 0.015  # the 1 % smearing stays


def test_headroom_script_runs_on_the_smoke_dataset(data_dir, tmp_path):
    import subprocess
    import sys

    from tests.train_helpers import REPO

    out = tmp_path / "headroom.json"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "headroom.py"), "--config",
                           "configs/default.py:smoke", f"--config.data.dir={data_dir}", "--split", "train",
                           "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    # 64 train events are too few for the profile correction's 165 coefficients: said, not fitted.
    assert set(doc) == {"calibrated sum", "oracle (true upstream loss)"}
    assert "calibrated sum: " in proc.stdout and "first layer's signal share: " in proc.stdout
    assert "profile-corrected sum skipped: ProfileCorrection: 64 usable events" in proc.stdout
