"""Benchmarks run end to end at tiny sizes on a CPU: the GPU script (--dry-run), run_all, train_step
(timings are not tested)."""

import json
import subprocess
import sys

from tests.train_helpers import REPO


def test_gpu_script_dry_run(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh"), "--dry-run"],
                          env={"OUT": str(tmp_path), "PYTHON": sys.executable,
                               "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, cwd=REPO,
                          timeout=480)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True
    assert [r["config"] for r in result["train"]] == ["default.py:smoke", "full_detector.py:smoke"]
    assert all(r["events_per_s"] > 0 and r["loss"] == r["loss"] for r in result["train"])
    assert result["operator_full"]["events_per_s"] > 0


def test_run_all_writes_the_report(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--only", "geometry",
                           "--out", str(tmp_path), "--report", str(tmp_path / "performance.md")],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = (tmp_path / "performance.md").read_text()
    assert "| synthetic_build_s |" in text and "has **not** run on a GPU" in text


def test_train_step_benchmark_writes_events_per_s(tmp_path):
    out = tmp_path / "train_step.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "train_step.py"), "--sizes", "smoke",
                           "--configs", "cnn_local3d.py", "--steps", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())["results"]["cnn_local3d.py [smoke]"]
    assert result["events_per_s"] > 0 and result["peak_rss_mb"] > 0 and result["batch"] == 8
