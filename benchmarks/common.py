"""Shared benchmark plumbing: machine description, peak memory, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
from pathlib import Path


def machine() -> dict:
    """What the numbers were measured on."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB); ru_maxrss is KB on Linux."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json(path: str | None, result: dict) -> None:
    """Prints the result as a table and writes it as JSON when a path is given."""
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(result, indent=2) + "\n")
