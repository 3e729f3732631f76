"""Builds a `Geometry` from the `config.geometry` section, whatever its source."""

from __future__ import annotations

import ml_collections

from hgcal_jax.geometry import synthetic, types


def parse_layers(text: str, n_max: int = 64) -> tuple[int, ...]:
    """'1-4,29' -> (1, 2, 3, 4, 29); 'all' -> every layer 1..n_max."""
    text = text.strip().lower()
    if text in ("all", ""):
        return tuple(range(1, n_max + 1))
    layers: set[int] = set()
    for part in text.split(","):
        try:
            lo, dash, hi = part.partition("-")
            lo_i = int(lo)
            hi_i = int(hi) if dash else lo_i
        except ValueError:
            raise ValueError(f"bad layer range {part!r} in {text!r} (expected e.g. '1-28,30')") from None
        if lo_i > hi_i:
            raise ValueError(f"bad layer range {part!r}: start after end")
        layers.update(range(lo_i, hi_i + 1))
    return tuple(sorted(layers))


def parse_zsides(text: str) -> tuple[int, ...]:
    """'both' -> (1, -1); '+' or '+1' -> (1,); '-' or '-1' -> (-1,)."""
    table = {"both": (1, -1), "+": (1,), "+1": (1,), "1": (1,), "-": (-1,), "-1": (-1,)}
    try:
        return table[text.strip().lower()]
    except KeyError:
        raise ValueError(f"bad zsides {text!r}: use both, + or -") from None


def synthetic_spec(cfg: ml_collections.ConfigDict) -> synthetic.SyntheticSpec:
    """The synthetic geometry spec of a `config.geometry` section."""
    return synthetic.SyntheticSpec(
        layers=parse_layers(cfg.layers, synthetic.N_LAYERS),
        zsides=parse_zsides(cfg.zsides),
        phi_min_deg=cfg.phi_min_deg,
        phi_max_deg=cfg.phi_max_deg,
        eta_min=cfg.eta_min,
        eta_max=cfg.eta_max,
        small_cell_radius=cfg.small_cell_radius,
    )


def restrict(geometry: types.Geometry, cfg: ml_collections.ConfigDict) -> types.Geometry:
    """Applies the layer and endcap selection of `cfg` to a geometry read from a file."""
    import numpy as np

    keep = np.isin(geometry.layer, parse_layers(cfg.layers)) & np.isin(
        geometry.zside, parse_zsides(cfg.zsides)
    )
    return geometry if keep.all() else geometry.select(keep)


def from_config(cfg: ml_collections.ConfigDict) -> types.Geometry:
    """Builds or reads the geometry described by a `config.geometry` section."""
    if cfg.source == "synthetic":
        return synthetic.build(synthetic_spec(cfg))
    paths = [p for p in cfg.path.split(",") if p]
    if not paths:
        raise ValueError(f"geometry.source={cfg.source!r} needs geometry.path (a ROOT file)")
    if cfg.source == "cmssw":
        from hgcal_jax.geometry import cmssw

        if len(paths) != 1:
            raise ValueError("geometry.source='cmssw' reads exactly one file")
        return restrict(cmssw.read_trigger_geometry(paths[0], include_bh=cfg.include_scintillator), cfg)
    if cfg.source == "ntuple":
        from hgcal_jax.geometry import ntuple

        return restrict(ntuple.from_ntuple(paths, include_scintillator=cfg.include_scintillator), cfg)
    raise ValueError(f"unknown geometry.source {cfg.source!r}: use synthetic, cmssw or ntuple")
