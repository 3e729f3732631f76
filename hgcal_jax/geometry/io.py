"""Geometry <-> single `.npz` file, with a format version and a content hash.

The hash (BLAKE2b over every per-cell array's name, dtype, shape and bytes) identifies the
geometry's content: interpolation tables and shards record it, so a table or a dataset built for
another geometry is detected instead of silently misused. Files are written atomically (temp file
+ rename) and read with `allow_pickle=False`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from hgcal_jax.geometry import types

FORMAT_VERSION = 1
_META_KEYS = ("format_version", "content_hash", "source", "params_json")


class GeometryFileError(ValueError):
    """A geometry file is missing, unreadable, of another version or corrupt."""


def content_hash(geometry: types.Geometry) -> str:
    """Stable hex digest of the geometry's cells (independent of source and params)."""
    h = hashlib.blake2b(digest_size=16)
    for name in types.FIELDS:
        value = np.ascontiguousarray(getattr(geometry, name))
        h.update(f"{name}:{value.dtype.str}:{value.shape};".encode())
        h.update(memoryview(value).cast("B"))
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write_fn) -> Path:
    """Calls `write_fn(tmp_path)` then renames tmp over `path`; no partial file is ever visible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(geometry: types.Geometry, path: str | os.PathLike, compress: bool = False) -> str:
    """Writes the geometry to `path` (.npz) and returns its content hash."""
    digest = content_hash(geometry)
    arrays = {name: getattr(geometry, name) for name in types.FIELDS}
    arrays["format_version"] = np.array(FORMAT_VERSION)
    arrays["content_hash"] = np.array(digest)
    arrays["source"] = np.array(geometry.source)
    arrays["params_json"] = np.array(json.dumps(geometry.params, sort_keys=True))

    def write(tmp):
        with open(tmp, "wb") as f:
            (np.savez_compressed if compress else np.savez)(f, **arrays)

    atomic_write(path, write)
    return digest


def load(path: str | os.PathLike, verify: bool = True) -> types.Geometry:
    """Reads a geometry `.npz`; raises GeometryFileError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise GeometryFileError(f"geometry file {path} does not exist")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:  # zipfile/pickle errors differ between numpy versions
        raise GeometryFileError(f"geometry file {path} is not a readable .npz: {e}") from e
    with npz:
        missing = [k for k in (*_META_KEYS, *types.FIELDS) if k not in npz.files]
        if "format_version" in npz.files and int(npz["format_version"]) != FORMAT_VERSION:
            raise GeometryFileError(
                f"geometry file {path} has format version {int(npz['format_version'])}, "
                f"this code reads version {FORMAT_VERSION}; rebuild it with scripts/make_geometry.py"
            )
        if missing:
            raise GeometryFileError(f"geometry file {path} lacks the arrays {missing}")
        try:
            geometry = types.Geometry(
                **{name: npz[name] for name in types.FIELDS},
                source=str(npz["source"]),
                params=json.loads(str(npz["params_json"])),
            )
        except ValueError as e:
            raise GeometryFileError(f"geometry file {path}: {e}") from e
        stored = str(npz["content_hash"])
    if verify and content_hash(geometry) != stored:
        raise GeometryFileError(
            f"geometry file {path} is corrupt: content hash {content_hash(geometry)} != stored {stored}"
        )
    return geometry


def stored_hash(path: str | os.PathLike) -> str:
    """The content hash recorded in a geometry file, without loading its cells."""
    with np.load(path, allow_pickle=False) as npz:
        return str(npz["content_hash"])
