"""The evaluation report: report.md, report.json and PNG plots from `evaluation.evaluate` output.

Plots (all with GeV / cm units, per estimator, model vs classical baselines):
response.png, resolution.png (with the S/sqrt(E) (+) C fits and effective sigmas), endcaps.png
(+z vs -z resolution), position.png (x, y RMS), angles.png (eta, phi RMS of the impact point),
residuals.png (histograms), pred_vs_truth.png, and ratio.png (each estimator's sigma/E over the
classical one's on the same events, per energy and per |eta| bin) when a comparison is given.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hgcal_jax import resolution
from hgcal_jax.geometry.io import atomic_write

STYLE = {"model": dict(color="C0", marker="o"), "classical": dict(color="C1", marker="s")}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def _series(rows, key):
    return (np.array([r["e_mean"] for r in rows]), np.array([r[key] for r in rows]),
            np.array([r.get(f"{key}_err", 0.0) for r in rows]))


def plots(result: dict, predictions: dict, out_dir: Path) -> list[Path]:
    plt = _plt()
    est = result["estimators"]
    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, entry in est.items():
        if entry["all"].get("energy"):
            e, y, err = _series(entry["all"]["energy"], "response")
            ax.errorbar(e, y, err, label=name, ls="-", **STYLE.get(name, {}))
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xscale="log", xlabel="true energy [GeV]", ylabel="response <E_est / E_true>",
           title="Energy response")
    ax.legend()
    paths.append(_save(fig, out_dir / "response.png"))

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, entry in est.items():
        rows = entry["all"].get("energy")
        if not rows:
            continue
        e, y, err = _series(rows, "resolution")
        style = STYLE.get(name, {})
        fit = entry["all"].get("fit")
        label = name if not fit else (f"{name}: S = {100 * fit['stochastic']:.1f} ± "
                                      f"{100 * fit['stochastic_err']:.1f} %, C = "
                                      f"{100 * fit['constant']:.2f} ± {100 * fit['constant_err']:.2f} %")
        ax.errorbar(e, 100 * y, 100 * err, ls="none", label=label, **style)
        ax.plot(e, 100 * _series(rows, "sigma_eff")[1], ls="none", marker=style.get("marker", "o"),
                mfc="none", color=style.get("color"), alpha=0.6)
        if fit:
            grid = np.geomspace(e.min() * 0.9, e.max() * 1.1, 100)
            ax.plot(grid, 100 * resolution.model(grid, fit["stochastic"], fit["constant"], fit["noise"]),
                    color=style.get("color"))
    ax.set(xscale="log", xlabel="true energy [GeV]", ylabel="σ(E)/E [%]",
           title="Energy resolution (filled: Gaussian core, open: effective σ)")
    ax.legend(fontsize=8)
    paths.append(_save(fig, out_dir / "resolution.png"))

    fig, axes = plt.subplots(1, len(est), figsize=(5 * len(est), 4), squeeze=False)
    for ax, (name, entry) in zip(axes[0], est.items(), strict=True):
        for endcap, color in (("+z", "C2"), ("-z", "C3")):
            rows = entry[endcap].get("energy")
            if rows:
                e, y, err = _series(rows, "resolution")
                ax.errorbar(e, 100 * y, 100 * err, color=color, marker="o", ls="none", label=endcap)
        check = entry["endcap_check"]
        ax.set(xscale="log", xlabel="true energy [GeV]", ylabel="σ(E)/E [%]",
               title=f"{name}: endcaps {'agree' if check['agree'] else 'DISAGREE'} "
                     f"(χ²/ndf {check['chi2']:.1f}/{check['ndf']})")
        ax.legend()
    paths.append(_save(fig, out_dir / "endcaps.png"))

    for filename, keys, unit in (("position.png", ("rms_x", "rms_y"), "cm"),
                                 ("angles.png", ("rms_eta", "rms_phi"), "")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, key in zip(axes, keys, strict=True):
            for name, entry in est.items():
                if entry["all"].get("position"):
                    e, y, err = _series(entry["all"]["position"], key)
                    ax.errorbar(e, y, err, label=name, ls="-", **STYLE.get(name, {}))
            ax.set(xscale="log", xlabel="true energy [GeV]",
                   ylabel=f"RMS of {key[4:]} residual" + (f" [{unit}]" if unit else ""),
                   title=f"Impact point at the reference layer: {key[4:]}")
            ax.legend()
        paths.append(_save(fig, out_dir / filename))

    truth = predictions["truth"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for name, pred in predictions["estimates"].items():
        style = STYLE.get(name, {})
        if "energy" in pred:
            axes[0].hist(pred["energy"] / truth["energy"], bins=80, range=(0.7, 1.2), histtype="step",
                         color=style.get("color"), label=name)
        for ax, key in zip(axes[1:], ("impact_x", "impact_y"), strict=True):
            if key in pred:
                ax.hist(pred[key] - truth[key], bins=80, range=(-3, 3), histtype="step",
                        color=style.get("color"), label=name)
    axes[0].set(xlabel="E_est / E_true", ylabel="events", title="Energy ratio")
    axes[1].set(xlabel="x_est - x_true [cm]", title="x residual")
    axes[2].set(xlabel="y_est - y_true [cm]", title="y residual")
    for ax in axes:
        ax.legend()
    paths.append(_save(fig, out_dir / "residuals.png"))

    model = predictions["estimates"].get("model", {})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    if "energy" in model:
        axes[0].hist2d(truth["energy"], model["energy"], bins=60, cmap="viridis", cmin=1)
        axes[0].plot([10, 200], [10, 200], color="w", lw=0.8)
        axes[0].set(xlabel="true energy [GeV]", ylabel="predicted energy [GeV]", title="Model: energy")
    if "impact_x" in model:
        axes[1].hist2d(truth["impact_x"], model["impact_x"], bins=60, cmap="viridis", cmin=1)
        axes[1].set(xlabel="true x [cm]", ylabel="predicted x [cm]", title="Model: impact x")
    paths.append(_save(fig, out_dir / "pred_vs_truth.png"))
    comp = result.get("comparison")
    if _has_comparison(comp):
        paths.append(_comparison_plot(comp, out_dir / "ratio.png"))
    return paths


def _has_comparison(comp: dict | None) -> bool:
    """Whether a comparison has anything to show (with too few events no energy bin is filled)."""
    return bool(comp) and any(c["bins"] for c in comp["all"]["estimators"].values())


def _comparison_plot(comp: dict, path: Path) -> Path:
    """ratio.png: sigma/E of each estimator over the reference's, per energy bin and per |eta| bin."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ref = comp["all"]["reference"]
    for name, c in comp["all"]["estimators"].items():
        style = STYLE.get(name, {})
        lo = np.array([b["e_lo"] for b in c["bins"]])
        axes[0].errorbar(lo, [b["ratio"] for b in c["bins"]], [b["ratio_err"] for b in c["bins"]],
                         ls="none", label=f"{name}: mean {c['mean_ratio']:.3f} ± {c['mean_ratio_err']:.3f}",
                         **style)
        rows = [r for r in comp.get("by_abs_eta", []) if name in r["estimators"]]
        if rows:
            centre = [0.5 * (r["eta_lo"] + r["eta_hi"]) for r in rows]
            axes[1].errorbar(centre, [r["estimators"][name]["mean_ratio"] for r in rows],
                             [r["estimators"][name]["mean_ratio_err"] for r in rows],
                             xerr=[0.5 * (r["eta_hi"] - r["eta_lo"]) for r in rows], ls="none", label=name,
                             **style)
    for ax in axes:
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.legend(fontsize=8)
    axes[0].set(xscale="log", xlabel="true energy, bin lower edge [GeV]",
                ylabel=f"σ/E ÷ σ/E of {ref}", title=f"Energy resolution relative to {ref} (same events)")
    axes[1].set(xlabel="|η|", ylabel=f"σ/E ÷ σ/E of {ref}",
                title="Per |η| bin (upstream material grows with |η|)")
    return _save(fig, path)


def fit_text(fit: dict | None) -> str:
    """The text "S = ... %, C = ... %" of a resolution fit; a C at its lower bound is said so (its
    error is then meaningless)."""
    if not fit:
        return "n/a"
    constant = (f"C = {100 * fit['constant']:.2f} ± {100 * fit['constant_err']:.2f} %"
                if fit["constant"] > 1e-4 else "C ≈ 0 (at its bound)")
    return f"S = {100 * fit['stochastic']:.1f} ± {100 * fit['stochastic_err']:.1f} %, {constant}"


def _ratio_cell(c: dict) -> str:
    return f"{c['mean_ratio']:.3f} ± {c['mean_ratio_err']:.3f}"


def _comparison_lines(comp: dict | None) -> list[str]:
    """The paired (same-event) comparison with the reference: resolution ratios with errors."""
    if not _has_comparison(comp):
        return []
    ref = comp["all"]["reference"]
    lines = ["", f"## Energy resolution relative to `{ref}` (same events, paired bootstrap of "
             f"{comp['all']['resamples']} resamples)", "",
             "Ratio of Gaussian-core σ/E to the reference's, geometric mean over energy bins (< 1: "
             "better); ΔS, ΔC: differences of the fitted terms. *better* = ratio below 1 by more "
             "than 2 errors.", "",
             "| estimator | σ/E ratio | ΔS (%) | ΔC (%) | better |", "| --- | --- | --- | --- | --- |"]
    for name, c in comp["all"]["estimators"].items():
        lines.append(f"| {name} | {_ratio_cell(c)} | {100 * c['delta_stochastic']:+.1f} ± "
                     f"{100 * c['delta_stochastic_err']:.1f} | {100 * c['delta_constant']:+.2f} ± "
                     f"{100 * c['delta_constant_err']:.2f} | {'yes' if c['better'] else 'no'} |")
    names = list(comp["all"]["estimators"])
    lines += ["", "Per energy bin:", "", "| E bin [GeV] | " + " | ".join(names) + " |",
              "| --- | " + " | ".join("---" for _ in names) + " |"]
    per_bin = {n: {r["e_lo"]: r for r in comp["all"]["estimators"][n]["bins"]} for n in names}
    for lo in sorted(set().union(*[set(b) for b in per_bin.values()])):
        cells = [f"{per_bin[n][lo]['ratio']:.3f} ± {per_bin[n][lo]['ratio_err']:.3f}" if lo in per_bin[n]
                 else "" for n in names]
        lines.append(f"| {lo:.0f}- | " + " | ".join(cells) + " |")
    if comp.get("by_abs_eta"):
        lines += ["", "Per |η| bin (upstream material grows with |η|; energy bins 10-28-80-200 GeV):", "",
                  "| abs(η) | events | " + " | ".join(names) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
        for row in comp["by_abs_eta"]:
            cells = [_ratio_cell(row["estimators"][n]) if n in row["estimators"] else "" for n in names]
            lines.append(f"| {row['eta_lo']:.1f}-{row['eta_hi']:.1f} | {row['n']} | "
                         + " | ".join(cells) + " |")
    return lines


def markdown(result: dict, meta: dict, images: list[Path]) -> str:
    est = result["estimators"]
    lines = [f"# Evaluation report: {meta.get('workdir', '')}", "",
             f"Split `{meta.get('split')}`, {meta.get('events')} events, checkpoint step "
             f"{meta.get('step')}. Model `{meta.get('model')}`; classical = calibrated layer-weighted "
             f"sum (weights fitted on train) and log-weighted barycentre at layer "
             f"{meta.get('reference_layer')} (w0 = {meta.get('w0')} tuned on train). Energies in GeV, "
             "positions in cm, all in the +z frame.", "", "## Resolution fits", "",
             "| estimator | all | +z | -z | endcaps agree (χ²/ndf, p) |", "| --- | --- | --- | --- | --- |"]
    for name, entry in est.items():
        check = entry["endcap_check"]
        lines.append(f"| {name} | {fit_text(entry['all'].get('fit'))} | {fit_text(entry['+z'].get('fit'))} "
                     f"| {fit_text(entry['-z'].get('fit'))} | {'yes' if check['agree'] else 'NO'} "
                     f"({check['chi2']:.1f}/{check['ndf']}, {check['p_value']:.2f}) |")
    names = [n for n in est if est[n]["all"].get("energy")]
    lines += ["", "## Energy resolution per bin (Gaussian core σ/E, %; effective σ in brackets)", "",
              "| E bin [GeV] | events | " + " | ".join(names) + " |",
              "| --- | --- | " + " | ".join("---" for _ in names) + " |"]
    by_bin = {n: {r["e_lo"]: r for r in est[n]["all"]["energy"]} for n in names}
    for lo in sorted(set().union(*[set(b) for b in by_bin.values()])) if names else []:
        cells = []
        for n in names:
            r = by_bin[n].get(lo)
            cells.append(f"{100 * r['resolution']:.2f} ± {100 * r['resolution_err']:.2f} "
                         f"({100 * r['sigma_eff']:.2f})" if r else "")
        first = next(by_bin[n][lo] for n in names if lo in by_bin[n])
        lines.append(f"| {first['e_lo']:.0f}-{first['e_hi']:.0f} | {first['n']} | "
                     + " | ".join(cells) + " |")
    pos_names = [n for n in est if est[n]["all"].get("position")]
    lines += ["", "## Impact position RMS per bin (x / y in cm)", "",
              "| E bin [GeV] | " + " | ".join(pos_names) + " |",
              "| --- | " + " | ".join("---" for _ in pos_names) + " |"]
    by_bin = {n: {r["e_lo"]: r for r in est[n]["all"]["position"]} for n in pos_names}
    for lo in sorted(set().union(*[set(b) for b in by_bin.values()])) if pos_names else []:
        cells = [f"{by_bin[n][lo]['rms_x']:.3f} / {by_bin[n][lo]['rms_y']:.3f}" if lo in by_bin[n] else ""
                 for n in pos_names]
        first = next(by_bin[n][lo] for n in pos_names if lo in by_bin[n])
        lines.append(f"| {first['e_lo']:.0f}-{first['e_hi']:.0f} | " + " | ".join(cells) + " |")
    lines += _comparison_lines(result.get("comparison"))
    lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images]
    return "\n".join(lines) + "\n"


def write(result: dict, predictions: dict, meta: dict, out_dir: str | Path) -> dict[str, Path]:
    """report.json, report.md, predictions.npz and the plots into `out_dir` (atomic writes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plots(result, predictions, out_dir)
    doc = {"meta": meta, **result}
    atomic_write(out_dir / "report.json", lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=1)))
    atomic_write(out_dir / "report.md", lambda tmp: Path(tmp).write_text(markdown(result, meta, images)))
    flat = {f"truth_{k}": v for k, v in predictions["truth"].items()}
    for name, est in predictions["estimates"].items():
        flat.update({f"{name}_{k}": v for k, v in est.items()})
    flat["event_id"] = predictions["event_id"]

    def save_npz(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **flat)

    atomic_write(out_dir / "predictions.npz", save_npz)
    return {"json": out_dir / "report.json", "md": out_dir / "report.md",
            "predictions": out_dir / "predictions.npz"}
