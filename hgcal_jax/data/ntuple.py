"""CMSSW HGCAL analysis ntuples (tree `ana/hgc`) -> event records, one per selected particle.

Real CMSSW events have no per-particle truth split of the hits, so a record holds every rechit of
the selected particle's own endcap (sign(rechit_z) == sign(genpart_eta); the 2018 converter mixed
the endcaps), noise included, in GeV. Files are read in `step_size` chunks, never whole.

Selection (`Selection`), per generator particle: pid in `pids`, `genpart_gen >= 0` (a particle of
the generator, not a secondary from the simulation), `genpart_reachedEE == 2` when required (the
ntupler sets 2 when the particle, propagated without an end vertex, hits the EE front face inside
the HGCAL disk; 1 when it reaches the EE plane outside the disk; 0 when it does not, e.g. a
photon that converted), pT >= `min_pt` and `min_abs_eta` <= |eta| <= `max_abs_eta`.

Hits: `rechit_detid` (uint32) is looked up in the geometry (int64 ids). A hit of the endcap that
is not in the geometry is
- a *scintillator* hit when `rechit_thickness` is FLT_MAX: skipped and counted, because the
  ntuple-derived geometry leaves tiles out on purpose;
- else *unknown*: dropped and counted; when unknown hits exceed `max_unknown_fraction` of the
  endcap's non-scintillator hits, the geometry does not fit the data and we raise NtupleError
  naming file, entry, particles and the count. Scintillator hits that a geometry does hold are
  kept like any other cell.
Counts are per (entry, endcap), even when two selected particles share the endcap. A record with
no hit left is skipped and counted (`skipped_empty`); a NaN/inf energy in a record raises.

Truth: event_id = file_index * 10^14 + entry * 10^5 + particle index (file_index: position of
the file in `paths`, so ids are unique across the inputs of one conversion). energy/eta/phi/pid
from genpart_*; zside = sign(eta). vertex: the production vertex, from genpart_ovx/y/z when the
ntuple has them, else the event's vtx_x/y/z, else NaN; genpart_dvx/y/z is *not* a vertex: it is
the particle's propagated position at the EE front face (layer 1) or its end vertex.
genpart_posx/y/z hold, per particle, the propagated position at each layer: 52 values in the
real ntuple, of which only the 28 EE layers are filled (the others are 0 or junk near 0), and an
empty list for particles with an end vertex. A layer's position is valid when zside * posz >
`MIN_LAYER_Z`; front = layer 1 (index 0), impact = `reference_layer` (index reference_layer - 1),
NaN where invalid or absent (or everywhere, for files without genpart_pos* read with
`require_positions=False`). barycentre: energy-weighted mean of the geometry cell centres over
the record's hits with positive energy. deposited, upstream_loss, leakage: NaN (unknown).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from hgcal_jax.data import records, streaming
from hgcal_jax.geometry import io as geometry_io
from hgcal_jax.geometry import ntuple as geometry_ntuple
from hgcal_jax.geometry import rootio, types

log = logging.getLogger(__name__)

TREE = "ana/hgc"
HIT_BRANCHES = ("rechit_detid", "rechit_energy", "rechit_z", "rechit_thickness")
GEN_BRANCHES = ("genpart_pid", "genpart_gen", "genpart_pt", "genpart_eta", "genpart_phi",
                "genpart_energy")
POSITION_BRANCHES = ("genpart_posx", "genpart_posy", "genpart_posz")
REACHED_EE = "genpart_reachedEE"
REACHED_EE_INSIDE = 2  # the ntupler's code for "hits the EE front face inside the disk"
# Production vertex branches, in order of preference (per particle, then per event).
VERTEX_BRANCHES = (("genpart_ovx", "genpart_ovy", "genpart_ovz"), ("vtx_x", "vtx_y", "vtx_z"))
SCINTILLATOR_MIN_UM = geometry_ntuple.SCINTILLATOR_MIN_UM  # one definition with the geometry
MIN_LAYER_Z = 100.0  # cm; layers sit at |z| > 300 cm, unfilled positions are 0 or near it
PARTICLE_STRIDE = 10**5
DEFAULT_SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}
MAX_ENTRIES = 10**9  # per file, so that entry * PARTICLE_STRIDE stays below FILE_STRIDE
FILE_STRIDE = PARTICLE_STRIDE * MAX_ENTRIES


class NtupleError(records.RecordError):
    """An ntuple cannot be converted; the message names the file and, if any, entry and particle."""


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which generator particles become records, and how strict the hit mapping is."""

    pids: tuple[int, ...] = (11, -11, 22, 13, -13, 211, -211)
    require_reached_ee: bool = True
    min_pt: float = 0.0
    min_abs_eta: float = 1.5
    max_abs_eta: float = 3.0
    reference_layer: int = 10
    max_unknown_fraction: float = 0.01
    # Without genpart_pos* (e.g. files written by uproot, which cannot write vector<vector>),
    # front/impact are NaN; only when this is False.
    require_positions: bool = True

    def __post_init__(self):
        object.__setattr__(self, "pids", tuple(int(p) for p in self.pids))
        if self.reference_layer < 1:
            raise ValueError(f"Selection.reference_layer must be >= 1, got {self.reference_layer}")
        if not 0.0 <= self.max_unknown_fraction <= 1.0:
            raise ValueError(f"Selection.max_unknown_fraction must be in [0, 1], got "
                             f"{self.max_unknown_fraction}")

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "pids": list(self.pids)}


@dataclasses.dataclass
class ConversionStats:
    """Counts filled while `convert` iterates (hits are counted per entry and endcap)."""

    files: int = 0
    entries: int = 0
    particles_seen: int = 0
    # Particles left after each successive cut: pid, gen, reached_ee, pt, eta.
    cutflow: dict[str, int] = dataclasses.field(default_factory=dict)
    particles_selected: int = 0
    records_written: int = 0
    hits_written: int = 0
    hits_unknown: int = 0
    hits_scintillator: int = 0
    skipped_empty: int = 0
    max_unknown_fraction: float = 0.0  # the largest per (entry, endcap) fraction seen

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def convert(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    geometry: types.Geometry,
    selection: Selection = Selection(),
    step_size: str | int = "50 MB",
    stats: ConversionStats | None = None,
) -> Iterator[records.Event]:
    """Yields one Event per selected particle of every entry of every file, in file order.

    `stats`, if given, is filled in place while iterating. Raises NtupleError for a missing or
    non-ROOT file, a missing tree or branch, a NaN/inf hit energy, or too many unknown hits.
    """
    stats = ConversionStats() if stats is None else stats
    for file_index, path in enumerate(_as_paths(paths)):
        yield from _convert_file(path, file_index, geometry, selection, step_size, stats)
    log.info("ntuple conversion: %s", stats.as_dict())


def convert_to_dataset(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    geometry: types.Geometry,
    selection: Selection,
    out_dir: str | os.PathLike,
    split_fractions: dict[str, float] | None = None,
    events_per_shard: int = 1000,
    seed: int = 0,
    step_size: str | int = "50 MB",
    extra_meta: dict | None = None,
) -> dict:
    """Converts the files into a shard dataset in `out_dir` (see data/streaming.py); the meta.

    The inputs are read once. A rerun with the same inputs (path, size, mtime), options and
    geometry over a complete output returns its meta.json without work; otherwise it redoes it.
    """
    paths = _as_paths(paths)
    fractions = streaming.check_fractions(split_fractions or DEFAULT_SPLITS)
    geometry_hash = geometry_io.content_hash(geometry)
    request = {
        "inputs": [_fingerprint(p) for p in paths],
        "selection": selection.as_dict(),
        "split_fractions": fractions,
        "events_per_shard": events_per_shard,
        "seed": seed,
        "geometry_hash": geometry_hash,
    }
    done = streaming.existing(out_dir, request)
    if done is not None:
        log.info("%s is complete for these inputs and options: nothing to do", out_dir)
        return done
    stats = ConversionStats()
    meta = {
        **(extra_meta or {}),
        "source": "ntuple",
        "energy_unit": "GeV",
        "geometry_hash": geometry_hash,
        "inputs": [str(p) for p in paths],
        "tree": TREE,
        "selection": selection.as_dict(),
        "split_fractions": fractions,
        "seed": seed,
        "events_per_shard": events_per_shard,
        "event_id": f"file_index * {FILE_STRIDE} + entry * {PARTICLE_STRIDE} + particle index",
    }
    return streaming.write_stream(
        out_dir,
        convert(paths, geometry, selection, step_size, stats=stats),
        lambda event: streaming.split_of(event.event_id, seed, fractions),
        events_per_shard, seed,
        lambda: {**meta, "conversion": stats.as_dict()},  # called once the stream is read
        request,
    )


def event_id(file_index: int, entry: int, particle: int) -> int:
    """The record id of a particle (see the module docstring)."""
    return file_index * FILE_STRIDE + entry * PARTICLE_STRIDE + particle


def _fingerprint(path: Path) -> dict:
    """What identifies an input for the rerun check (hashing GB-sized files would cost a read)."""
    if not path.is_file():
        raise NtupleError(f"ROOT file {path} does not exist")
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _as_paths(paths) -> list[Path]:
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not paths:
        raise ValueError("ntuple conversion needs at least one input file")
    return [Path(p) for p in paths]


def _open(path: Path, required: tuple[str, ...]):
    try:
        return rootio.open_tree(path, TREE, required)
    except geometry_io.GeometryFileError as e:  # same checks as the geometry; one error type here
        raise NtupleError(str(e)) from e


def _convert_file(path: Path, file_index: int, geometry: types.Geometry, selection: Selection,
                  step_size, stats: ConversionStats) -> Iterator[records.Event]:
    required = (HIT_BRANCHES + GEN_BRANCHES + ((REACHED_EE,) if selection.require_reached_ee else ())
                + (POSITION_BRANCHES if selection.require_positions else ()))
    file, tree = _open(path, required)
    with file:
        if tree.num_entries > MAX_ENTRIES:
            raise NtupleError(f"{path}: {tree.num_entries} entries, event ids allow {MAX_ENTRIES}")
        keys = set(tree.keys())
        vertex = next((b for b in VERTEX_BRANCHES if set(b) <= keys), ())
        if not selection.require_positions:
            if set(POSITION_BRANCHES) <= keys:
                required += POSITION_BRANCHES
            else:
                log.warning("%s has no %s: front and impact positions are NaN", path, POSITION_BRANCHES)
        before = dataclasses.replace(stats)  # per-file counts for the log below
        chunks = tree.iterate(required + vertex, step_size=step_size, library="ak", report=True)
        while True:
            try:
                chunk, report = next(chunks)
            except StopIteration:
                break
            except (OSError, uproot.deserialization.DeserializationError) as e:
                raise NtupleError(f"{path}: cannot read '{TREE}': {e}") from e
            yield from _convert_chunk(chunk, int(report.tree_entry_start), path, file_index,
                                      geometry, selection, vertex, stats)
        stats.files += 1
    unknown = stats.hits_unknown - before.hits_unknown
    log.log(logging.WARNING if unknown else logging.INFO,
            "%s: %d records; dropped %d hits not in the geometry (max fraction %.2g per endcap) and "
            "%d scintillator hits; %d particles without hits skipped", path,
            stats.records_written - before.records_written, unknown, stats.max_unknown_fraction,
            stats.hits_scintillator - before.hits_scintillator,
            stats.skipped_empty - before.skipped_empty)


def _flat(array) -> np.ndarray:
    return ak.to_numpy(ak.flatten(array, axis=1))


def _at_layer(chunk, index: int, zside: np.ndarray) -> np.ndarray:
    """(n_particles, 3) propagated position at layer `index + 1`; NaN where absent or unfilled."""
    xyz = []
    for c in "xyz":
        padded = ak.pad_none(chunk[f"genpart_pos{c}"], index + 1, axis=2)[:, :, index]
        xyz.append(_flat(ak.fill_none(padded, np.nan)).astype(np.float64))
    xyz = np.stack(xyz, axis=-1)
    valid = zside * xyz[:, 2] > MIN_LAYER_Z
    return np.where(valid[:, None], xyz, np.nan)


def _select(chunk, selection: Selection, stats: ConversionStats) -> np.ndarray:
    """Mask of the chunk's (flattened) particles passing the selection; fills the cut flow."""
    eta = _flat(chunk["genpart_eta"])
    abs_eta = np.abs(eta)
    cuts = {
        "pid": np.isin(_flat(chunk["genpart_pid"]), selection.pids),
        "gen": _flat(chunk["genpart_gen"]) >= 0,
        "reached_ee": (_flat(chunk[REACHED_EE]) == REACHED_EE_INSIDE
                       if selection.require_reached_ee else np.ones(len(eta), bool)),
        "pt": _flat(chunk["genpart_pt"]) >= selection.min_pt,
        # eta != 0 guarantees an endcap even with min_abs_eta = 0.
        "eta": (abs_eta >= selection.min_abs_eta) & (abs_eta <= selection.max_abs_eta) & (eta != 0),
    }
    keep = np.ones(len(eta), bool)
    for name, passed in cuts.items():
        keep &= passed
        stats.cutflow[name] = stats.cutflow.get(name, 0) + int(keep.sum())
    stats.particles_seen += len(eta)
    stats.particles_selected += int(keep.sum())
    return keep


def _convert_chunk(chunk, entry_start: int, path: Path, file_index: int, geometry: types.Geometry,
                   selection: Selection, vertex: tuple[str, ...],
                   stats: ConversionStats) -> Iterator[records.Event]:
    stats.entries += len(chunk)
    keep = _select(chunk, selection, stats)
    if not keep.any():
        return
    n_gen = ak.to_numpy(ak.num(chunk["genpart_pid"]))
    gen_event = np.repeat(np.arange(len(chunk)), n_gen)
    gen_index = _flat(ak.local_index(chunk["genpart_pid"]))
    if gen_index.max(initial=0) >= PARTICLE_STRIDE:
        raise NtupleError(f"{path}: an entry has more than {PARTICLE_STRIDE} particles")
    gen = {name: _flat(chunk[f"genpart_{name}"]) for name in ("pid", "energy", "eta", "phi")}
    zside = np.sign(gen["eta"]).astype(np.int64)
    if POSITION_BRANCHES[0] in chunk.fields:
        front = _at_layer(chunk, 0, zside)
        impact = _at_layer(chunk, selection.reference_layer - 1, zside)
    else:
        front = impact = np.full((len(zside), 3), np.nan)
    if vertex:
        per_event = vertex[0].startswith("vtx")
        vtx = np.stack([ak.to_numpy(chunk[b]) if per_event else _flat(chunk[b]) for b in vertex], -1)
        vtx = vtx[gen_event] if per_event else vtx
    else:
        vtx = np.full((len(gen_event), 3), np.nan)

    # One geometry lookup per chunk: the flattened hits of every entry, sliced per entry below.
    hit_start = np.concatenate([[0], np.cumsum(ak.to_numpy(ak.num(chunk["rechit_detid"])))])
    detid = _flat(chunk["rechit_detid"]).astype(np.int64)
    cell = geometry.index_of(detid)
    energy = _flat(chunk["rechit_energy"])
    hit_side = np.sign(_flat(chunk["rechit_z"])).astype(np.int64)
    scint = _flat(chunk["rechit_thickness"]) > SCINTILLATOR_MIN_UM

    selected = np.flatnonzero(keep)
    for e in np.unique(gen_event[selected]):
        entry = entry_start + int(e)
        particles = selected[gen_event[selected] == e]  # in particle order
        where = f"{path}: entry {entry}"
        endcaps = {int(side): _endcap(np.arange(hit_start[e], hit_start[e + 1]), int(side), cell,
                                      hit_side, scint, energy, selection,
                                      f"{where}, particles {gen_index[particles].tolist()}", stats)
                   for side in np.unique(zside[particles])}
        for k in particles:
            hits = endcaps[int(zside[k])]
            if hits is None:
                stats.skipped_empty += 1
                log.info("%s, particle %d: no hit on its endcap, skipped", where, gen_index[k])
                continue
            cells, energies = hits
            truth = {
                "event_id": event_id(file_index, entry, int(gen_index[k])),
                "pid": int(gen["pid"][k]), "zside": int(zside[k]), "energy": float(gen["energy"][k]),
                "eta": float(gen["eta"][k]), "phi": float(gen["phi"][k]),
                **_xyz("vertex", vtx[k]), **_xyz("front", front[k]), **_xyz("impact", impact[k]),
                **_xyz("barycentre", _barycentre(geometry, cells, energies)),
                "deposited": np.nan, "upstream_loss": np.nan, "leakage": np.nan,
            }
            try:
                event = records.make_event(cells, energies, truth)
            except records.RecordError as err:
                raise NtupleError(f"{where}, particle {int(gen_index[k])}: {err}") from err
            stats.records_written += 1
            stats.hits_written += len(event.cells)
            yield event


def _endcap(rows: np.ndarray, side: int, cell: np.ndarray, hit_side: np.ndarray, scint: np.ndarray,
            energy: np.ndarray, selection: Selection, where: str,
            stats: ConversionStats) -> tuple[np.ndarray, np.ndarray] | None:
    """(cells, energies) of one entry's endcap, None if empty; counts and checks unknown hits."""
    rows = rows[hit_side[rows] == side]
    known = cell[rows] >= 0
    n_scint = int(np.sum(~known & scint[rows]))
    n_unknown = int(np.sum(~known & ~scint[rows]))
    n_expected = len(rows) - n_scint  # the hits a silicon geometry should hold
    fraction = n_unknown / max(n_expected, 1)
    if fraction > selection.max_unknown_fraction:
        raise NtupleError(f"{where} (zside {side:+d}): {n_unknown} of {n_expected} non-scintillator "
                          f"hits ({fraction:.2%}) are not in the geometry, above "
                          f"max_unknown_fraction {selection.max_unknown_fraction:.2%}")
    stats.hits_unknown += n_unknown
    stats.hits_scintillator += n_scint
    stats.max_unknown_fraction = max(stats.max_unknown_fraction, fraction)
    if not known.any():
        return None
    return cell[rows[known]], energy[rows[known]]


def _barycentre(geometry: types.Geometry, cells: np.ndarray, energies: np.ndarray) -> np.ndarray:
    positive = energies > 0  # NaN compares False: a NaN record raises in make_event anyway
    weight = energies[positive].astype(np.float64)
    if not weight.sum() > 0:
        return np.full(3, np.nan)
    return weight @ geometry.center[cells[positive]] / weight.sum()


def _xyz(prefix: str, value: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_{c}": float(v) for c, v in zip("xyz", value, strict=True)}
