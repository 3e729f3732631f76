"""Shared fixtures: tiny geometries and the real-data path."""

import os
from pathlib import Path

import pytest

from hgcal_jax.geometry import synthetic

REPO = Path(__file__).resolve().parents[1]


def shared_data(name: str) -> Path:
    """A file of ../shared/data (or $HGCAL_SHARED_DATA); skips the test if it is absent."""
    root = Path(os.environ.get("HGCAL_SHARED_DATA", REPO.parent / "shared" / "data"))
    path = root / name
    if not path.is_file():
        pytest.skip(f"shared data file {path} is not present")
    return path


@pytest.fixture(scope="session")
def tiny_geometry():
    """Two EE layers and one FH layer, both endcaps, a 30-degree sector (~15k cells)."""
    return synthetic.build(
        synthetic.SyntheticSpec(layers=(1, 2, 29), phi_min_deg=0.0, phi_max_deg=30.0)
    )


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """The smoke config's simulated dataset (96 events), once per test module."""
    from tests.train_helpers import make_dataset

    return make_dataset(tmp_path_factory.mktemp("smoke_data"))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A per-module interpolation-table cache."""
    return tmp_path_factory.mktemp("cache")
