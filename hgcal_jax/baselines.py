"""Classical estimates a physicist would use without a network, fitted on the train split.

1. Energy: the calibrated layer-weighted sum E = sum_l w_l S_l, where S_l is the event's summed
   hit signal in layer l. The weights minimise sum_i ((sum_l w_l S_il - E_i) / E_i)^2 over the
   train events (least squares on the relative error, so every energy counts alike).
2. Position: the log-weighted barycentre of the hits on the reference layer,
   w_i = max(0, w0 + ln(E_i / E_layer)), with w0 tuned on the train events (a grid over 2..7)
   to minimise the RMS distance to the true impact point. Energy-weighted barycentres are biased
   towards cell centres; log weights fix most of that (hgcal_facts.md).
Everything is in the +z frame: a -z event's hits have the x, y of their +z twins.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable

import numpy as np

from hgcal_jax.data import records
from hgcal_jax.geometry import types

W0_GRID = np.round(np.arange(2.0, 7.01, 0.25), 2)


@dataclasses.dataclass
class EventSummaries:
    """What the baselines need from each event, gathered in one pass over the shards."""

    layer_sums: np.ndarray  # (N, L) summed hit signal per layer (hit units)
    truth: dict[str, np.ndarray]  # raw truth fields, (N,) each
    ref_offsets: np.ndarray  # (N + 1,) start of each event's reference-layer hits
    ref_energy: np.ndarray  # (M,) reference-layer hit energies
    ref_xy: np.ndarray  # (M, 2) their cell centres


def summarise(events: Iterable[records.Event], geometry: types.Geometry, layers: np.ndarray,
              reference_layer: int) -> EventSummaries:
    """Per-layer sums and reference-layer hits of every event."""
    position = np.full(int(layers.max()) + 1, -1)
    position[layers] = np.arange(len(layers))
    sums, truth_rows, offsets, energies, xy = [], [], [0], [], []
    for event in events:
        layer = geometry.layer[event.cells]
        sums.append(np.bincount(position[layer], weights=event.energies, minlength=len(layers)))
        on_ref = layer == reference_layer
        energies.append(event.energies[on_ref])
        xy.append(geometry.center[event.cells[on_ref], :2])
        offsets.append(offsets[-1] + int(on_ref.sum()))
        truth_rows.append(event.truth)
    truth = {name: np.array([t[name] for t in truth_rows]) for name in records.TRUTH_FIELDS}
    return EventSummaries(np.array(sums), truth, np.array(offsets),
                          np.concatenate(energies) if energies else np.zeros(0),
                          np.concatenate(xy) if xy else np.zeros((0, 2)))


def fit_layer_weights(layer_sums: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Least-squares offset and layer weights on the relative error: `[b, w_1, ..., w_L]`.

    The offset b (GeV) absorbs the noise pedestal (noise hits above threshold add signal to every
    event); without it the fit bends the deep layers' weights negative to subtract it.
    """
    design = np.column_stack([np.ones(len(energy)), layer_sums]) / energy[:, None]
    used = design.any(axis=0)  # layers no event reaches get weight 0, not an arbitrary value
    weights = np.zeros(design.shape[1])
    weights[used] = np.linalg.lstsq(design[:, used], np.ones(len(energy)), rcond=None)[0]
    return weights


def calibrated_sum(layer_sums: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """E = b + sum_l w_l S_l with `weights = [b, w_1, ..., w_L]`."""
    return weights[0] + layer_sums @ weights[1:]


def log_weighted_position(s: EventSummaries, w0: float) -> np.ndarray:
    """(N, 2) log-weighted barycentres on the reference layer; NaN where no positive hit."""
    e = np.maximum(s.ref_energy, 0.0)
    event = np.repeat(np.arange(len(s.ref_offsets) - 1), np.diff(s.ref_offsets))
    total = np.bincount(event, weights=e, minlength=len(s.ref_offsets) - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.maximum(0.0, w0 + np.log(e / total[event]))
    w = np.where(e > 0, w, 0.0)
    norm = np.bincount(event, weights=w, minlength=len(total))
    # Where w0 is so small that every log weight vanishes, fall back to energy weights, so that
    # every w0 of the tuning grid is scored on the same events.
    flat = (norm <= 0)[event]
    w = np.where(flat, e, w)
    norm = np.bincount(event, weights=w, minlength=len(total))
    out = np.full((len(total), 2), np.nan)
    for k in range(2):
        num = np.bincount(event, weights=w * s.ref_xy[:, k], minlength=len(total))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[:, k] = np.where(norm > 0, num / norm, np.nan)
    return out


def tune_w0(s: EventSummaries, grid: np.ndarray = W0_GRID) -> tuple[float, np.ndarray]:
    """w0 minimising the RMS distance to the true impact; returns (w0, rms per grid point)."""
    truth = np.stack([s.truth["impact_x"], s.truth["impact_y"]], axis=1)
    rms = []
    for w0 in grid:
        pos = log_weighted_position(s, w0)
        d2 = np.sum((pos - truth) ** 2, axis=1)
        rms.append(np.sqrt(np.nanmean(d2)) if np.isfinite(d2).any() else np.inf)
    rms = np.array(rms)
    return float(grid[int(np.argmin(rms))]), rms


@dataclasses.dataclass
class Baselines:
    layer_weights: np.ndarray
    w0: float

    @classmethod
    def fit(cls, train: EventSummaries) -> Baselines:
        return cls(fit_layer_weights(train.layer_sums, train.truth["energy"].astype(np.float64)),
                   tune_w0(train)[0])

    def predict(self, s: EventSummaries) -> dict[str, np.ndarray]:
        pos = log_weighted_position(s, self.w0)
        return {"energy": calibrated_sum(s.layer_sums, self.layer_weights),
                "impact_x": pos[:, 0], "impact_y": pos[:, 1]}


def polynomial_features(x: np.ndarray, degree: int) -> np.ndarray:
    """(N, F) -> (N, K): 1 and every monomial of the F columns up to `degree`."""
    columns = [np.ones(len(x))]
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(range(x.shape[1]), d):
            columns.append(np.prod(x[:, list(combo)], axis=1))
    return np.column_stack(columns)


@dataclasses.dataclass
class ProfileCorrection:
    """A stronger classical estimate, to measure what the longitudinal profile can give: the
    calibrated sum times (1 + a polynomial in the first `n_layers` layers' shares of the signal,
    |eta| and ln(E_sum / 50 GeV)), fitted by least squares on the train split.

    The early layers' shares measure how early the shower started, hence how much it lost in the
    upstream material (the main nuisance); the linear layer weights can only correct that
    linearly. Not in the report (its baselines are the two above): `scripts/headroom.py`
    prints it with the calibrated sum and an oracle that knows each event's upstream loss.
    It takes |eta| as given (the caller passes the true one; the direction is measured far better
    than the energy, and the network gets it through the window position). Fitted like the layer
    weights, on the relative error; events whose sum is not positive are left out of the fit.
    """

    layer_weights: np.ndarray
    coef: np.ndarray
    n_layers: int = 6
    degree: int = 3

    @staticmethod
    def _features(layer_sums, abs_eta, e_sum, n_layers, degree):
        share = layer_sums[:, :n_layers] / np.maximum(layer_sums.sum(axis=1, keepdims=True), 1e-9)
        x = np.column_stack([share, abs_eta - 2.2, np.log(np.maximum(e_sum, 1e-3) / 50.0)])
        return polynomial_features(x, degree)

    @classmethod
    def fit(cls, layer_sums: np.ndarray, abs_eta: np.ndarray, energy: np.ndarray, n_layers: int = 6,
            degree: int = 3) -> ProfileCorrection:
        weights = fit_layer_weights(layer_sums, energy)
        e_sum = calibrated_sum(layer_sums, weights)
        ok = np.isfinite(e_sum) & (e_sum > 0)
        design = cls._features(layer_sums[ok], abs_eta[ok], e_sum[ok], n_layers, degree)
        if len(design) < 2 * design.shape[1]:
            raise ValueError(f"ProfileCorrection: {len(design)} usable events for {design.shape[1]} "
                             f"coefficients (n_layers={n_layers}, degree={degree}); need twice as many")
        # Minimise sum(((e_sum (1 + p) - E) / E)^2): rows scaled by e_sum / E, target 1 - e_sum / E.
        scale = e_sum[ok] / energy[ok]
        coef = np.linalg.lstsq(design * scale[:, None], 1.0 - scale, rcond=None)[0]
        return cls(weights, coef, n_layers, degree)

    def predict(self, layer_sums: np.ndarray, abs_eta: np.ndarray) -> np.ndarray:
        e_sum = calibrated_sum(layer_sums, self.layer_weights)
        design = self._features(layer_sums, abs_eta, e_sum, self.n_layers, self.degree)
        return e_sum * (1.0 + design @ self.coef)
