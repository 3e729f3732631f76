"""Hexagonal cells -> square pixels: exact overlap tables and the jitted operator."""

from hgcal_jax.interpolation.grid import Grid
from hgcal_jax.interpolation.operator import (
           DeviceTable,
           Interpolated,
           interpolate,
           interpolate_into,
           validate_hits,
)
from hgcal_jax.interpolation.table import InterpolationTable, TableMismatchError, build, load_or_build

__all__ = ["DeviceTable", "Grid", "Interpolated", "InterpolationTable", "TableMismatchError",
           "build", "interpolate", "interpolate_into", "load_or_build", "validate_hits"]
