"""Configs build in every variant; the CLI names bad keys, variants and files."""

import subprocess
import sys
from pathlib import Path

import pytest

from hgcal_jax import cli
from hgcal_jax.geometry import io, sources

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("variant", ["", ":smoke"])
def test_every_config_builds(path, variant):
    config = cli.load(f"{path}{variant}")
    assert config.geometry.source in ("synthetic", "cmssw", "ntuple")
    assert (path.read_text().lstrip().startswith('"""')), f"{path.name} lacks a docstring"


def test_long_variant_is_the_default_job_with_more_data_and_steps():
    default, long = (cli.load(f"{REPO / 'configs' / 'default.py'}{v}") for v in ("", ":long"))
    assert long.data.train_events == 5 * default.data.train_events
    assert long.train.steps == 2 * default.train.steps
    assert long.data.dir != default.data.dir and long.data.simulation_seed != default.seed
    assert long.model == default.model and long.optim == default.optim and long.seed == default.seed


def test_unknown_variant_is_an_error():
    with pytest.raises(ValueError, match="unknown variant 'smok'"):
        cli.load(f"{REPO / 'configs' / 'default.py'}:smok")


def test_smoke_geometry_builds_from_config():
    geometry = sources.from_config(cli.load(f"{REPO / 'configs' / 'default.py'}:smoke").geometry)
    assert set(geometry.layers()) == set(range(1, 13))
    assert set(geometry.zsides()) == {1, -1}


@pytest.mark.parametrize("text, expected", [("1-4,29", (1, 2, 3, 4, 29)), ("7", (7,)),
                                            ("all", tuple(range(1, 41)))])
def test_parse_layers(text, expected):
    assert sources.parse_layers(text, 40) == expected


@pytest.mark.parametrize("text", ["1-", "a", "5-2"])
def test_parse_layers_rejects(text):
    with pytest.raises(ValueError, match="bad layer range"):
        sources.parse_layers(text)


def _make_geometry(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_geometry.py"), *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_make_geometry_cli_writes_and_summarises(tmp_path):
    out = tmp_path / "g.npz"
    proc = _make_geometry("synthetic", "--config", "configs/default.py:smoke",
                          "--config.geometry.layers=1-2", "--config.geometry.zsides=-",
                          "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "cells -z" in proc.stdout and "content hash" in proc.stdout
    geometry = io.load(out)
    assert set(geometry.layers()) == {1, 2} and set(geometry.zsides()) == {-1}


@pytest.mark.parametrize("args, message", [
    (["--config.geometry.layrs=3"], "unknown config key 'layrs'"),
    (["--config.geomtry.layers=3"], "unknown config key 'geomtry'"),
    (["--config.geometry.phi_min_deg=abc"], "phi_min_deg=abc"),
])
def test_cli_names_the_bad_override(tmp_path, args, message):
    proc = _make_geometry("synthetic", "--config", "configs/default.py:smoke", *args,
                          "--out", str(tmp_path / "g.npz"))
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "g.npz").exists()


def test_cli_names_a_missing_config_file(tmp_path):
    proc = _make_geometry("synthetic", "--config", "configs/nope.py", "--out", str(tmp_path / "g"))
    assert proc.returncode == 2
    assert "config file configs/nope.py does not exist" in proc.stderr


def test_cli_names_an_unknown_variant(tmp_path):
    proc = _make_geometry("synthetic", "--config=configs/default.py:smok", "--out", str(tmp_path / "g"))
    assert proc.returncode == 2
    assert "unknown variant 'smok'" in proc.stderr and "Traceback" not in proc.stderr
