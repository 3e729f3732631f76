"""Truth targets and the endcap canonicalisation of truth.

The reflection R: (x, y, z) -> (x, y, -z) maps an event of the -z endcap onto the +z endcap.
Under R: z-like coordinates and eta change sign (eta = -ln tan(theta/2), theta -> pi - theta),
pz changes sign, zside becomes +1; x, y, phi, energy and pT are unchanged. R is an involution,
so the same function maps canonical (+z frame) predictions back to the event's own endcap.
The hits need no remapping: see `hgcal_jax.interpolation.operator`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

# Truth fields whose sign flips under R. Everything else (x, y, phi, energy, pt, pid) is invariant.
Z_ODD_FIELDS = ("eta", "z", "pz", "vertex_z", "front_z", "impact_z", "barycentre_z")


def reflect_to_plus_z(truth: Mapping[str, np.ndarray], zside: np.ndarray) -> dict[str, np.ndarray]:
    """Applies R to the events with zside == -1; returns a new dict (zside included, if present).

    Args:
      truth: per-event arrays keyed by field name.
      zside: (B,) +1 or -1, the endcap each event is on.
    """
    zside = np.asarray(zside)
    if not np.isin(zside, (-1, 1)).all():
        raise ValueError(f"zside must be +1 or -1, got {np.unique(zside)}")
    flip = np.where(zside < 0, -1, 1)
    out = {}
    for key, value in truth.items():
        value = np.asarray(value)
        if key in Z_ODD_FIELDS:
            out[key] = value * flip.reshape((-1,) + (1,) * (value.ndim - 1)).astype(value.dtype)
        elif key == "zside":
            out[key] = np.ones_like(value)
        else:
            out[key] = value
    return out


def reflect_from_plus_z(canonical: Mapping[str, np.ndarray], zside: np.ndarray) -> dict[str, np.ndarray]:
    """Maps canonical (+z frame) values back to each event's own endcap (R is its own inverse)."""
    out = reflect_to_plus_z(canonical, zside)
    if "zside" in canonical:
        out["zside"] = np.asarray(zside).astype(np.asarray(canonical["zside"]).dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Regression targets: canonical (+z frame) truth -> normalised network targets, and back.
# ---------------------------------------------------------------------------------------------

# Targets a model can regress, with the truth field each reads. All positions are in the +z
# frame (after `reflect_to_plus_z`): eta is then |eta|.
TARGET_FIELDS = {
    "energy": "energy",
    "impact_x": "impact_x",
    "impact_y": "impact_y",
    "eta": "eta",
    "phi": "phi",
    "barycentre_x": "barycentre_x",
    "barycentre_y": "barycentre_y",
    "barycentre_z": "barycentre_z",
}
ENERGY_REPRESENTATIONS = ("log", "linear")


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """Which targets, in which representation; `encode` and `decode` are exact inverses.

    Representations (each then standardised with the train split's mean and std from meta.json):
      energy "log":    y = (ln E - mean ln E) / std ln E. Relative errors become additive, the
                       natural scale for a calorimeter whose resolution is relative.
      energy "linear": y = (E - mean E) / std E.
      anything else:   y = (value - mean) / std, in the +z frame.
    """

    names: tuple[str, ...] = ("energy", "impact_x", "impact_y")
    energy: str = "log"

    def __post_init__(self):
        unknown = [n for n in self.names if n not in TARGET_FIELDS]
        if unknown or not self.names:
            raise ValueError(f"unknown targets {unknown}; known: {sorted(TARGET_FIELDS)}")
        if self.energy not in ENERGY_REPRESENTATIONS:
            raise ValueError(f"energy representation must be one of {ENERGY_REPRESENTATIONS}")

    def _stat(self, name: str, stats: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
        key = "log_energy" if (name == "energy" and self.energy == "log") else TARGET_FIELDS[name]
        try:
            entry = stats[key]
        except KeyError:
            raise KeyError(f"meta.json target_stats has no entry {key!r} for target {name!r}") from None
        return float(entry["mean"]), float(entry["std"]) or 1.0

    def encode(self, truth: Mapping[str, np.ndarray], stats) -> np.ndarray:
        """Canonical truth arrays (B,) -> targets (B, T) float32."""
        columns = []
        for name in self.names:
            value = np.asarray(truth[TARGET_FIELDS[name]], np.float64)
            if name == "energy" and self.energy == "log":
                value = np.log(value)
            mean, std = self._stat(name, stats)
            columns.append((value - mean) / std)
        return np.stack(columns, axis=-1).astype(np.float32)

    def decode(self, targets, stats) -> dict[str, np.ndarray]:
        """Targets (B, T) -> physical values (GeV, cm, rad) in the +z frame."""
        targets = np.asarray(targets, np.float64)
        out = {}
        for k, name in enumerate(self.names):
            mean, std = self._stat(name, stats)
            value = targets[..., k] * std + mean
            out[name] = np.exp(value) if (name == "energy" and self.energy == "log") else value
        return out
