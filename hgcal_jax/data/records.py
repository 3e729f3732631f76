"""One event <-> bytes: the versioned record format of the shards (no pickle).

Layout of version 1 (little-endian):

    magic b"HGEV" | version u16 | reserved u16 | n_hits u32 | truth (TRUTH_DTYPE, packed)
    | cells: int32 delta-coded (first index, then differences of the sorted indices)
    | energies: float32 byte-shuffled (all first bytes, then all second bytes, ...)

Delta coding turns sorted cell indices into small numbers, and byte shuffling groups the
similar exponent bytes of the energies; zstd in the ArrayRecord shards then compresses the
record ~1.65x instead of ~1.19x for the raw arrays (measured by benchmarks/storage.py).
Cells are rows of the dataset's Geometry (whose content hash is in meta.json).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

RECORD_VERSION = 1
_MAGIC = b"HGEV"
_HEADER = np.dtype([("magic", "S4"), ("version", "<u2"), ("reserved", "<u2"), ("n_hits", "<u4")])

# Truth per event. Positions in cm, energies in GeV; hit energies are in the dataset's
# `energy_unit` (meta.json: MIP for simulation, GeV for CMSSW ntuples).
TRUTH_DTYPE = np.dtype([
    ("event_id", "<i8"),
    ("pid", "<i4"),
    ("zside", "<i4"),
    ("energy", "<f4"),          # true particle energy (GeV)
    ("eta", "<f4"),
    ("phi", "<f4"),
    ("vertex_x", "<f4"), ("vertex_y", "<f4"), ("vertex_z", "<f4"),
    ("front_x", "<f4"), ("front_y", "<f4"), ("front_z", "<f4"),      # impact at layer 1
    ("impact_x", "<f4"), ("impact_y", "<f4"), ("impact_z", "<f4"),   # impact at the reference layer
    ("barycentre_x", "<f4"), ("barycentre_y", "<f4"), ("barycentre_z", "<f4"),
    ("deposited", "<f4"),       # signal before noise, in energy_unit (NaN if unknown)
    ("upstream_loss", "<f4"),   # GeV lost before layer 1 (NaN if unknown)
    ("leakage", "<f4"),         # GeV leaking past the last layer (NaN if unknown)
])  # fmt: skip
TRUTH_FIELDS = TRUTH_DTYPE.names


class RecordError(ValueError):
    """A record cannot be parsed or an event is invalid; the message says which."""


@dataclasses.dataclass(eq=False)
class Event:
    """One event: sorted unique cell indices, their energies, and the truth."""

    cells: np.ndarray  # (n,) int32, sorted, unique
    energies: np.ndarray  # (n,) float32
    truth: dict[str, float | int]

    def __eq__(self, other) -> bool:
        if not isinstance(other, Event):
            return NotImplemented
        return (np.array_equal(self.cells, other.cells)
                and np.array_equal(self.energies.view(np.uint32), other.energies.view(np.uint32))
                and _truth_array(self.truth).tobytes() == _truth_array(other.truth).tobytes())

    @property
    def event_id(self) -> int:
        return int(self.truth.get("event_id", -1))


def make_event(cells, energies, truth: Mapping[str, float | int]) -> Event:
    """Builds a valid Event: sorts by cell, sums duplicate cells, checks values.

    Raises RecordError naming the event id for NaN/inf energies, negative cell indices or
    unknown truth fields. Missing truth fields are NaN (floats) or -1 (integers).
    """
    event_id = truth.get("event_id", "?")
    cells = np.asarray(cells, dtype=np.int64).ravel()
    energies = np.asarray(energies, dtype=np.float32).ravel()
    if cells.shape != energies.shape:
        raise RecordError(f"event {event_id}: {len(cells)} cells but {len(energies)} energies")
    bad = ~np.isfinite(energies)
    if bad.any():
        raise RecordError(f"event {event_id}: {int(bad.sum())} hits with NaN or infinite energy")
    if len(cells) and (cells.min() < 0 or cells.max() > np.iinfo(np.int32).max):
        raise RecordError(f"event {event_id}: cell indices outside [0, 2^31)")
    unknown = set(truth) - set(TRUTH_FIELDS)
    if unknown:
        raise RecordError(f"event {event_id}: unknown truth fields {sorted(unknown)}")
    uniq, inverse = np.unique(cells, return_inverse=True)
    if len(uniq) != len(cells):
        energies = np.bincount(inverse, weights=energies, minlength=len(uniq)).astype(np.float32)
    else:
        energies = energies[np.argsort(cells, kind="stable")]
    full = {name: (np.nan if TRUTH_DTYPE[name].kind == "f" else -1) for name in TRUTH_FIELDS}
    full.update(truth)
    return Event(uniq.astype(np.int32), energies, _truth_dict(_truth_array(full)))


def _truth_array(truth: Mapping[str, float | int]) -> np.ndarray:
    arr = np.zeros((), TRUTH_DTYPE)
    for name in TRUTH_FIELDS:
        arr[name] = truth.get(name, np.nan if TRUTH_DTYPE[name].kind == "f" else -1)
    return arr


def _truth_dict(arr: np.ndarray) -> dict[str, float | int]:
    return {name: arr[name].item() for name in TRUTH_FIELDS}


def serialize(event: Event) -> bytes:
    """Encodes an event (see the module docstring)."""
    n = len(event.cells)
    header = np.array((_MAGIC, RECORD_VERSION, 0, n), dtype=_HEADER)
    deltas = np.diff(event.cells.astype(np.int32), prepend=np.int32(0)).astype("<i4")
    shuffled = np.ascontiguousarray(event.energies.astype("<f4").view(np.uint8).reshape(n, 4).T)
    return b"".join([header.tobytes(), _truth_array(event.truth).tobytes(), deltas.tobytes(),
                     shuffled.tobytes()])


def parse(data: bytes, where: str = "record", n_cells: int | None = None) -> Event:
    """Decodes bytes from `serialize`; raises RecordError naming `where` if they are not valid.

    Beyond the layout, the reader re-checks what `make_event` guarantees, because bytes can come
    from a buggy or foreign writer: sorted unique cells and finite energies (a NaN would
    otherwise reach the train step's NaN guard, far from its record). With `n_cells` (the
    geometry's size) a cell index beyond the geometry is refused too: the jitted interpolation
    would clamp it to the last cell and silently image the energy in the wrong place.
    Content errors name the event id as well as `where`.
    """
    if len(data) < _HEADER.itemsize + TRUTH_DTYPE.itemsize:
        raise RecordError(f"{where}: {len(data)} bytes is too short for an event record")
    header = np.frombuffer(data, _HEADER, count=1)[0]
    if header["magic"] != _MAGIC:
        raise RecordError(f"{where}: not an event record (magic {header['magic']!r})")
    if header["version"] != RECORD_VERSION:
        raise RecordError(f"{where}: record version {header['version']}, this code reads "
                          f"{RECORD_VERSION}")
    n = int(header["n_hits"])
    offset = _HEADER.itemsize + TRUTH_DTYPE.itemsize
    if len(data) != offset + 8 * n:
        raise RecordError(f"{where}: {len(data)} bytes, expected {offset + 8 * n} for {n} hits")
    truth = np.frombuffer(data, TRUTH_DTYPE, count=1, offset=_HEADER.itemsize)[0]
    cells = np.cumsum(np.frombuffer(data, "<i4", count=n, offset=offset), dtype=np.int64)
    shuffled = np.frombuffer(data, np.uint8, count=4 * n, offset=offset + 4 * n)
    energies = np.ascontiguousarray(shuffled.reshape(4, n).T).view("<f4").reshape(n)
    name = f"{where} (event {int(truth['event_id'])})"
    if n and (cells.min() < 0 or np.any(np.diff(cells) <= 0)):
        raise RecordError(f"{name}: cell indices are not sorted and unique (corrupt record)")
    if n_cells is not None and n and cells[-1] >= n_cells:
        raise RecordError(f"{name}: {int(np.sum(cells >= n_cells))} hits with cell indices beyond "
                          f"the geometry's {n_cells} cells (another geometry or a corrupt writer)")
    bad = ~np.isfinite(energies)
    if bad.any():
        raise RecordError(f"{name}: {int(bad.sum())} hits with NaN or infinite energy")
    return Event(cells.astype(np.int32), energies.astype(np.float32),
                 _truth_dict(np.array(truth, TRUTH_DTYPE)))


def parse_truth(data: bytes, where: str = "record") -> np.ndarray:
    """Only the truth of a record (a TRUTH_DTYPE scalar), without decoding the hits."""
    if len(data) < _HEADER.itemsize + TRUTH_DTYPE.itemsize or data[:4] != _MAGIC:
        raise RecordError(f"{where}: not an event record")
    return np.frombuffer(data, TRUTH_DTYPE, count=1, offset=_HEADER.itemsize)[0]
