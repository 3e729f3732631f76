"""HGCAL cell geometry: the `Geometry` type, its npz io and its three sources."""

from hgcal_jax.geometry.io import GeometryFileError, content_hash, load, save
from hgcal_jax.geometry.types import Geometry

__all__ = ["Geometry", "GeometryFileError", "content_hash", "load", "save"]
