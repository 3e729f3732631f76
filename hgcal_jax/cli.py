"""Shared command-line plumbing: `--config path.py[:arg]` plus `--config.a.b=value` overrides.

The scripts stay thin: they declare their flags, call `run(main)`, and read the config with
`config()`. Errors in the config flags (a missing file, an override key that does not exist, a
value of the wrong type) end the program with one line naming the flag and the key, instead of
the traceback that ml_collections raises from inside absl's flag parser.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import ml_collections
from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file `path.py[:variant]`; override fields with --config.a.b=value.",
    lock_config=True,
)


class ConfigError(SystemExit):
    """Bad --config flag; exits with status 2 and a one-line message."""

    def __init__(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        super().__init__(2)


def _parse_flags(argv: list[str]) -> list[str]:
    spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if spec is None and "--config" in argv[:-1]:
        spec = argv[argv.index("--config") + 1]
    if spec and not Path(spec.partition(":")[0]).is_file():
        raise ConfigError(f"config file {spec.partition(':')[0]} does not exist (--config {spec})")
    try:
        return flags.FLAGS(argv)
    except (KeyError, AttributeError) as e:
        # ml_collections reports an unknown override key as KeyError("'key'\nDid you mean ...").
        inner = e
        while inner.args and isinstance(inner.args[0], BaseException):
            inner = inner.args[0]  # AttributeError(KeyError(msg)) for a leaf key
        text = str(inner.args[0]) if inner.args else str(inner)
        key = re.match(r"'([^']+)'", text)
        hint = text.split("\n", 1)[1] if "\n" in text else ""
        bad = " ".join(a for a in argv[1:] if a.startswith("--config."))
        raise ConfigError(
            f"unknown config key {key.group(1) if key else text!r} in {bad or '--config'}. {hint}"
        ) from None
    except flags.Error as e:
        # Keep the config's own last line (e.g. "unknown variant 'smok'"), not the traceback.
        lines = [line for line in str(e).splitlines() if line.strip()]
        head = lines[0].split(":", 1)[0]
        raise ConfigError(f"{head}: {lines[-1]}" if len(lines) > 1 else str(e)) from None


def _input_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a missing or mismatched file), not a bug in this code."""
    from hgcal_jax import checkpoint
    from hgcal_jax.data import records, shards
    from hgcal_jax.geometry import io
    from hgcal_jax.interpolation import table

    return (io.GeometryFileError, shards.DatasetError, records.RecordError,
            checkpoint.CheckpointMismatchError, table.TableMismatchError, FileNotFoundError)


def run(main) -> None:
    """`absl.app.run(main)` with config-aware flag errors, and bad input (a missing geometry,
    a dataset that does not match) reported as one `error:` line with exit status 1; set
    HGCAL_JAX_TRACEBACK=1 to get the traceback instead."""

    def guarded(argv):
        try:
            return main(argv)
        except _input_errors() as e:
            if os.environ.get("HGCAL_JAX_TRACEBACK"):
                raise
            message = str(e).splitlines()[0] if str(e) else ""
            print(f"error: {type(e).__name__}: {message} (HGCAL_JAX_TRACEBACK=1 shows the traceback)",
                  file=sys.stderr)
            sys.exit(1)

    app.run(guarded, flags_parser=_parse_flags)


def load(spec: str) -> ml_collections.ConfigDict:
    """Loads `path.py[:arg]` outside absl flags (for defaults and tests)."""
    path, _, arg = spec.partition(":")
    if not Path(path).is_file():
        raise ConfigError(f"config file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"_config_{Path(path).stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None)


# The main job's config, for scripts run without --config (a checkout, not an installed wheel).
DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "default.py")


def config() -> ml_collections.ConfigDict:
    """The parsed `--config`; a missing or broken config file is a one-line error."""
    if flags.FLAGS["config"].present == 0 and _CONFIG.value is None:
        raise ConfigError("--config is required, e.g. --config configs/default.py")
    try:
        value = _CONFIG.value
        _ = value.keys()  # ml_collections defers a file error until first use
    except (OSError, ValueError, AttributeError, TypeError) as e:
        raise ConfigError(f"--config {flags.FLAGS['config'].serialize()}: {e}") from None
    return value
