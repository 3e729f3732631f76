"""Shared pieces of the training tests: a simulated smoke dataset and smoke configs."""

from pathlib import Path

from hgcal_jax import cli
from hgcal_jax.geometry import io, sources
from hgcal_jax.simulation import simulator
from hgcal_jax.simulation.spec import SimulationSpec

REPO = Path(__file__).resolve().parents[1]


def make_dataset(directory: Path) -> Path:
    """The smoke config's dataset (96 events on a 12-layer sector), simulated once."""
    config = cli.load(f"{REPO / 'configs' / 'default.py'}:smoke")
    geometry_path = directory / "geometry.npz"
    io.save(sources.from_config(config.geometry), geometry_path)
    simulator.simulate_dataset(str(geometry_path), SimulationSpec.from_config(config.simulation),
                               str(directory), {"train": 64, "val": 16, "test": 16}, 32, seed=0,
                               progress=False)
    return directory


def smoke_config(data_dir: Path, cache_dir: Path, name: str = "default.py:smoke", **overrides):
    config = cli.load(str(REPO / "configs" / name))
    config.data.dir = str(data_dir)
    config.interpolation.cache_dir = str(cache_dir)
    for key, value in overrides.items():
        section, field = key.split("__")
        setattr(config[section], field, value)
    return config
