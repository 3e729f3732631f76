"""CMSSW `HGCalDetId` (2018, v8 geometry) packing, vectorised.

Bits: cell 0-7, wafer 8-17, wafer type 18 (1 = fine/small cells), layer-in-subdetector 19-23,
zside 24 (1 = +z), subdetector 25-27 (3 = EE, 4 = FH, 5 = BH), detector 28-31 (6 = Forward).
Source: DataFormats/ForwardDetId/interface/HGCalDetId.h (CMSSW_10_X).
"""

from __future__ import annotations

import numpy as np

EE, FH, BH = 3, 4, 5
FORWARD = 6
N_EE_LAYERS = 28  # FH layer k is global layer 28 + k in the 2018 geometry


def encode(subdet, zside, layer_in_subdet, wafer_type, wafer, cell) -> np.ndarray:
    """Packs the fields into int64 ids (values fit in 32 unsigned bits)."""
    subdet, zside, lay, wtype, wafer, cell = (
        np.asarray(v, dtype=np.int64) for v in (subdet, zside, layer_in_subdet, wafer_type, wafer, cell)
    )
    for name, v, bits in (("cell", cell, 8), ("wafer", wafer, 10), ("layer", lay, 5)):
        if v.size and (v.min() < 0 or v.max() >= 1 << bits):
            raise ValueError(f"HGCalDetId {name} out of range [0, {1 << bits}): {v.min()}..{v.max()}")
    return (
        (FORWARD << 28)
        | (subdet << 25)
        | ((zside > 0).astype(np.int64) << 24)
        | (lay << 19)
        | ((wtype > 0).astype(np.int64) << 18)
        | (wafer << 8)
        | cell
    )


def decode(ids) -> dict[str, np.ndarray]:
    """Unpacks ids into subdet, zside (+1/-1), layer (in subdetector), wafer_type, wafer, cell."""
    ids = np.asarray(ids, dtype=np.int64)
    return {
        "subdet": (ids >> 25) & 0x7,
        "zside": np.where((ids >> 24) & 0x1, 1, -1),
        "layer": (ids >> 19) & 0x1F,
        "wafer_type": (ids >> 18) & 0x1,
        "wafer": (ids >> 8) & 0x3FF,
        "cell": ids & 0xFF,
    }


def global_layer(subdet, layer_in_subdet) -> np.ndarray:
    """Global 1-based layer: EE 1-28, FH 29-40, BH 41+ (2018 numbering)."""
    subdet = np.asarray(subdet)
    layer_in_subdet = np.asarray(layer_in_subdet)
    offset = np.select([subdet == EE, subdet == FH], [0, N_EE_LAYERS], N_EE_LAYERS + 12)
    return layer_in_subdet + offset
