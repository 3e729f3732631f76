"""Energy-resolution estimators and the sigma/E = S/sqrt(E) (+) C (+) N/E fit.

Used by the simulation validation and the evaluation report. `(+)` is the quadratic sum.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.optimize
import scipy.stats


@dataclasses.dataclass(frozen=True)
class Resolution:
    """Response and resolution of one sample of E_reco / E_true."""

    n: int
    mean: float  # mean response
    sigma: float  # standard deviation (after 3-sigma iterative clipping)
    sigma_err: float
    sigma_eff: float  # half-width of the smallest interval holding 68.3 %

    @property
    def rel(self) -> float:
        """sigma / mean: the relative resolution."""
        return self.sigma / self.mean

    @property
    def rel_err(self) -> float:
        return self.sigma_err / self.mean


def measure(ratio: np.ndarray, clip: float = 3.0, iterations: int = 5) -> Resolution:
    """Core response and width of `ratio` = E_reco / E_true (iteratively clipped at clip sigma).

    Clipping makes the width describe the Gaussian core, not the tails from upstream losses;
    the effective sigma is reported beside it for the tails' sake.
    """
    ratio = np.asarray(ratio, np.float64)
    ratio = ratio[np.isfinite(ratio)]
    if len(ratio) < 5:
        raise ValueError(f"need at least 5 values to measure a resolution, got {len(ratio)}")
    core = ratio
    for _ in range(iterations):
        mean, std = core.mean(), core.std(ddof=1)
        core = ratio[np.abs(ratio - mean) <= clip * std]
    mean, std = core.mean(), core.std(ddof=1)
    srt = np.sort(ratio)
    k = max(int(np.ceil(0.683 * len(srt))), 2)
    sigma_eff = 0.5 * float(np.min(srt[k - 1:] - srt[: len(srt) - k + 1]))
    return Resolution(n=len(core), mean=float(mean), sigma=float(std),
                      sigma_err=float(std / np.sqrt(2 * (len(core) - 1))), sigma_eff=sigma_eff)


@dataclasses.dataclass(frozen=True)
class ResolutionFit:
    stochastic: float  # S (fraction, e.g. 0.22 for 22 %/sqrt(GeV))
    stochastic_err: float
    constant: float  # C
    constant_err: float
    noise: float  # N (GeV), 0 when not fitted
    noise_err: float
    chi2_ndf: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def model(energy, s, c, n=0.0):
    return np.sqrt(s**2 / energy + c**2 + (n / energy) ** 2)


def fit(energy, rel, rel_err, with_noise: bool = False) -> ResolutionFit:
    """Least-squares fit of sigma/E(E) = S/sqrt(E) (+) C [(+) N/E], with parameter errors."""
    energy, rel, rel_err = (np.asarray(a, np.float64) for a in (energy, rel, rel_err))
    f = (lambda e, s, c, n: model(e, s, c, n)) if with_noise else (lambda e, s, c: model(e, s, c))
    p0 = [0.2, 0.01, 0.1][: 3 if with_noise else 2]
    params, cov = scipy.optimize.curve_fit(f, energy, rel, p0=p0, sigma=rel_err,
                                           absolute_sigma=True, bounds=(0, np.inf), maxfev=20000)
    errors = np.sqrt(np.diag(cov))
    ndf = max(len(energy) - len(params), 1)
    chi2 = float(np.sum(((rel - f(energy, *params)) / rel_err) ** 2))
    noise, noise_err = (params[2], errors[2]) if with_noise else (0.0, 0.0)
    return ResolutionFit(float(params[0]), float(errors[0]), float(params[1]), float(errors[1]),
                         float(noise), float(noise_err), chi2 / ndf)


@dataclasses.dataclass(frozen=True)
class GaussianCore:
    """A Gaussian fitted to the core (+-2 sigma) of a response distribution."""

    n: int
    mean: float
    mean_err: float
    sigma: float
    sigma_err: float
    sigma_eff: float

    @property
    def rel(self) -> float:
        return self.sigma / self.mean

    @property
    def rel_err(self) -> float:
        return self.rel * np.hypot(self.sigma_err / self.sigma, self.mean_err / self.mean)


def gaussian_core(ratio: np.ndarray, window: float = 2.0, iterations: int = 3) -> GaussianCore:
    """Fits N(mu, sigma) to the histogram of `ratio` within mu +- window sigma, iteratively.

    Starts from the clipped moments of `measure`; falls back to them when there are too few
    events (< 50) or the fit does not converge. Errors come from the fit's covariance
    (Poisson bin errors).
    """
    base = measure(ratio)
    ratio = np.asarray(ratio, np.float64)
    ratio = ratio[np.isfinite(ratio)]
    fallback = GaussianCore(base.n, base.mean, base.sigma / np.sqrt(base.n), base.sigma,
                            base.sigma_err, base.sigma_eff)
    if len(ratio) < 50:
        return fallback
    mu, sigma = base.mean, base.sigma
    gauss = lambda x, a, m, s: a * np.exp(-0.5 * ((x - m) / s) ** 2)  # noqa: E731
    try:
        for _ in range(iterations):
            core = ratio[np.abs(ratio - mu) <= window * sigma]
            bins = int(np.clip(np.sqrt(len(core)), 10, 60))
            counts, edges = np.histogram(core, bins=bins)
            centres = 0.5 * (edges[1:] + edges[:-1])
            (a, mu, sigma), cov = scipy.optimize.curve_fit(
                gauss, centres, counts, p0=[counts.max(), mu, sigma],
                sigma=np.sqrt(np.maximum(counts, 1)), absolute_sigma=True, maxfev=5000)
            sigma = abs(sigma)
        errors = np.sqrt(np.diag(cov))
    except (RuntimeError, ValueError):
        return fallback
    if not (np.isfinite(errors).all() and 0 < sigma < 10 * base.sigma):
        return fallback
    return GaussianCore(len(ratio), float(mu), float(errors[1]), float(sigma), float(errors[2]),
                        base.sigma_eff)
