"""Truth targets and the endcap canonicalisation of truth.

The reflection R: (x, y, z) -> (x, y, -z) maps an event of the -z endcap onto the +z endcap.
Under R: z-like coordinates and eta change sign (eta = -ln tan(theta/2), theta -> pi - theta),
pz changes sign, zside becomes +1; x, y, phi, energy and pT are unchanged. R is an involution,
so the same function maps canonical (+z frame) predictions back to the event's own endcap.
The hits need no remapping: see `hgcal_jax.interpolation.operator`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

# Truth fields whose sign flips under R. Everything else (x, y, phi, energy, pt, pid) is invariant.
Z_ODD_FIELDS = ("eta", "z", "pz", "vertex_z", "impact_z", "impact_z_ref", "barycentre_z")


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
