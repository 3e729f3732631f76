"""Opening a ROOT TTree for a geometry source, with errors that name the file and what is missing.

Both ROOT geometry sources (`cmssw`, `ntuple`) need the same checks before reading a chunk: the
file exists, it is ROOT, the tree is there and is a TTree, and it has the branches the source
needs. uproot raises a different exception type for each (FileNotFoundError, OSError, KeyError,
...); turning them all into one `GeometryFileError` lets callers handle a bad input in one place.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import uproot

from hgcal_jax.geometry import io


def open_tree(path: str | os.PathLike, tree: str, required: Iterable[str]):
    """Opens `path` and returns `(file, tree)`; the caller closes the file.

    Raises:
      GeometryFileError: the file is missing or not ROOT, the tree is absent or not a TTree, or
        branches in `required` are missing (all of them are listed).
    """
    path = Path(path)
    if not path.is_file():
        raise io.GeometryFileError(f"ROOT file {path} does not exist")
    try:
        file = uproot.open(path)
    except Exception as e:  # uproot raises OSError/ValueError/... depending on the corruption
        raise io.GeometryFileError(f"{path} is not a readable ROOT file: {e}") from e
    try:
        try:
            obj = file[tree]
        except KeyError as e:
            raise io.GeometryFileError(
                f"ROOT file {path} has no tree '{tree}' (keys: {sorted(file.keys())[:20]})"
            ) from e
        if not isinstance(obj, uproot.behaviors.TTree.TTree):
            raise io.GeometryFileError(
                f"ROOT file {path}: '{tree}' is a {type(obj).__name__}, not a TTree"
            )
        missing = sorted(set(required) - set(obj.keys()))
        if missing:
            raise io.GeometryFileError(
                f"ROOT file {path}: tree '{tree}' lacks the branches {missing}"
            )
    except BaseException:
        file.close()
        raise
    return file, obj
