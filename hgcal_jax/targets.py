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
ENERGY_REPRESENTATIONS = ("log", "log_ratio", "linear")
POSITION_TARGETS = ("impact_x", "impact_y", "barycentre_x", "barycentre_y")


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """Which targets, in which representation; `encode` and `decode` are exact inverses.

    Representations (standardised with the train split's statistics from meta.json):
      energy "log":       y = (ln E - mean ln E) / std ln E. Relative errors become additive,
                          the natural scale for a calorimeter whose resolution is relative.
      energy "log_ratio": y = (ln(E / E_raw) - mean) / std, with E_raw the raw calibrated sum of
                          the event's hits (passed as `raw_energy`): the network learns only the
                          correction to the classical estimate (upstream loss, leakage, dead cells).
                          Its mean and std are `stats["log_ratio"]`, measured by the training setup.
      energy "linear":    y = (E - mean E) / std E.
      positions x, y:     with a reference point (`centre`, the image window's centre) the offset
                          from it in units of `position_scale` cm; without, standardised.
      eta, phi, barycentre_z: standardised, in the +z frame.
    Works with numpy or jax.numpy arrays (`xp`), so steps can encode on device.
    """

    names: tuple[str, ...] = ("energy", "impact_x", "impact_y")
    energy: str = "log"
    position_scale: float = 10.0  # cm

    def __post_init__(self):
        unknown = [n for n in self.names if n not in TARGET_FIELDS]
        if unknown or not self.names:
            raise ValueError(f"unknown targets {unknown}; known: {sorted(TARGET_FIELDS)}")
        if self.energy not in ENERGY_REPRESENTATIONS:
            raise ValueError(f"energy representation must be one of {ENERGY_REPRESENTATIONS}")

    def _stat(self, name: str, stats: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
        key = {"log": "log_energy", "log_ratio": "log_ratio", "linear": "energy"}[self.energy] \
            if name == "energy" else TARGET_FIELDS[name]
        try:
            entry = stats[key]
        except KeyError:
            raise KeyError(f"target statistics have no entry {key!r} for target {name!r}") from None
        return float(entry["mean"]), float(entry["std"]) or 1.0

    def _reference(self, name, centre, raw_energy, xp):
        if name in POSITION_TARGETS and centre is not None:
            return centre[..., 0 if name.endswith("_x") else 1]
        if name == "energy" and self.energy == "log_ratio":
            if raw_energy is None:
                raise ValueError("energy representation 'log_ratio' needs raw_energy")
            return xp.log(xp.maximum(raw_energy, 1e-6))
        return None

    def encode(self, truth: Mapping, stats, *, centre=None, raw_energy=None, xp=np):
        """Canonical truth arrays (B,) -> targets (B, T) float32."""
        columns = []
        for name in self.names:
            value = xp.asarray(truth[TARGET_FIELDS[name]], xp.float32)
            if name == "energy" and self.energy != "linear":
                value = xp.log(value)
            ref = self._reference(name, centre, raw_energy, xp)
            if ref is not None and name in POSITION_TARGETS:
                columns.append((value - ref) / self.position_scale)
                continue
            if ref is not None:
                value = value - ref
            mean, std = self._stat(name, stats)
            columns.append((value - mean) / std)
        return xp.stack(columns, axis=-1).astype(xp.float32)

    def decode(self, targets, stats, *, centre=None, raw_energy=None, xp=np) -> dict:
        """Targets (B, T) -> physical values (GeV, cm, rad) in the +z frame."""
        out = {}
        for k, name in enumerate(self.names):
            y = targets[..., k]
            ref = self._reference(name, centre, raw_energy, xp)
            if ref is not None and name in POSITION_TARGETS:
                out[name] = ref + y * self.position_scale
                continue
            mean, std = self._stat(name, stats)
            value = y * std + mean
            if ref is not None:
                value = value + ref
            out[name] = xp.exp(value) if (name == "energy" and self.energy != "linear") else value
        return out
