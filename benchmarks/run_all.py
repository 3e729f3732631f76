"""Runs every benchmark in one go and writes docs/performance.md.

  python benchmarks/run_all.py                      # all, JSON into runs/bench/, report into docs/
  python benchmarks/run_all.py --only geometry,storage --out /tmp/bench --report /tmp/perf.md

Each benchmark runs as its own process (so peak memory is its own) with --json; the report is
one markdown table per benchmark with the machine description, each measure, the baseline
measured in the same run and the ratio, and a GPU section from runs/bench/gpu.json when
benchmarks/gpu.sh has run on a GPU (it says so plainly when it has not).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# (benchmark, measure, baseline measure or None, goal text)
ROWS = {
    "geometry": [("synthetic_build_s", "shapely_loop_build_s_scaled", "< 30 s"),
                 ("peak_rss_mb", None, "< 2000 MB"), ("cells_total", None, ""),
                 ("load_verify_s", None, "")],
    "interpolation": [("table_build_s", "shapely_reference_s", "< 60 s, >= 20x"),
                      ("operator_events_per_s_full", "scipy_csr_events_per_s_full", ">= scipy"),
                      ("operator_events_per_s_window", None, ""),
                      ("operator_events_per_s_full_fresh_buffer", None, "")],
    "storage": [("bytes_per_event_sparse", "bytes_per_event_dense_zlib", "dense/sparse >= 8"),
                ("bytes_per_event_sparse", "bytes_per_event_sparse_raw_encoding", ""),
                ("simulate_events_per_s", None, ">= 200 /core"), ("write_events_per_s", None, "")],
    "pipeline": [("loader_events_per_s", "train_step_events_per_s", "loader/step >= 2"),
                 ("input_bound_fraction", None, "< 0.05")],
}
LOWER_IS_BETTER = {"synthetic_build_s", "table_build_s", "bytes_per_event_sparse", "peak_rss_mb",
                   "input_bound_fraction", "load_verify_s"}


def run(name: str, out: Path, extra: list[str]) -> dict | None:
    path = out / f"{name}.json"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / f"{name}.py"), "--json", str(path), *extra],
                          capture_output=True, text=True, cwd=REPO)
    print(f"{name}: {'ok' if proc.returncode == 0 else 'FAILED'} in {time.perf_counter() - start:.0f} s",
          flush=True)
    if proc.returncode:
        print(proc.stderr[-2000:])
        return None
    return json.loads(path.read_text())


def _fmt(x) -> str:
    return f"{x:,.3g}" if isinstance(x, float) and abs(x) < 100 else (
        f"{x:,.0f}" if isinstance(x, (int, float)) else str(x))


def table(name: str, result: dict) -> list[str]:
    lines = [f"### {name}", "", "| measure | value | baseline (same run) | ratio | goal |",
             "| --- | --- | --- | --- | --- |"]
    for measure, baseline, goal in ROWS.get(name, []):
        value = result.get(measure)
        base = result.get(baseline) if baseline else None
        ratio = ""
        if isinstance(value, (int, float)) and isinstance(base, (int, float)) and value and base:
            ratio = f"{base / value:.1f}x" if measure in LOWER_IS_BETTER else f"{value / base:.2f}x"
        lines.append(f"| {measure} | {_fmt(value)} | {(baseline + ' = ' + _fmt(base)) if baseline else ''} "
                     f"| {ratio} | {goal} |")
    return lines + [""]


def train_step_table(result: dict) -> list[str]:
    lines = ["### train_step (every config, smoke and default sizes)", "",
             "| config [size] | image | batch | params | events/s | step ms | peak RSS MB | timed steps |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, r in result.get("results", {}).items():
        steps = r.get("steps", result.get("steps", ""))
        if "error" in r:
            lines.append(f"| {key} | error: {r['error']} | | | | | | {steps} |")
        else:
            lines.append(f"| {key} | {'x'.join(map(str, r['image']))} | {r['batch']} | {r['params']:,} "
                         f"| {r['events_per_s']} | {r['step_ms']} | {r['peak_rss_mb']} | {steps} |")
    if result.get("note"):
        lines += ["", result["note"] + "."]
    lines += ["", "A few timed steps after compilation understate the rate of a long run (the default CNN "
              "trained at 159-262 events/s, the RNN cells at 95-113)."]
    return lines + [""]


def gpu_section(path: Path) -> list[str]:
    lines = ["## GPU", ""]
    if not path.is_file() or json.loads(path.read_text()).get("dry_run", True):
        return lines + ["`benchmarks/gpu.sh` has **not** run on a GPU yet (no GPU was available to the "
                        "sessions so far). Run it on one H200-class GPU: `bash benchmarks/gpu.sh`; it "
                        "writes runs/bench/gpu.json, which this report then includes.", ""]
    gpu = json.loads(path.read_text())
    lines += [f"Devices: {', '.join(gpu['devices'])}", "",
              "| config | image | batch | events/s | step ms | compile s | peak device MB |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in gpu["train"]:
        lines.append(f"| {r['config']} | {'x'.join(map(str, r['image']))} | {r['batch']} | "
                     f"{r['events_per_s']} | {r['step_ms']} | {r['compile_s']} | "
                     f"{r['peak_device_memory_mb']} |")
    op = gpu["operator_full"]
    lines += ["", f"Operator, full-detector images, batch {op['batch']}: {op['events_per_s']} events/s, "
              f"{op['batch_ms']} ms per batch against a bandwidth floor of {op['bandwidth_floor_ms']} ms "
              f"({op['fraction_of_floor']} of the floor).", ""]
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "bench"))
    parser.add_argument("--report", default=str(REPO / "docs" / "performance.md"))
    parser.add_argument("--only", help="comma-separated subset of: " + ", ".join([*ROWS, "train_step"]))
    parser.add_argument("--data", help="an existing simulated dataset for pipeline/train_step")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the report from the JSON files already in --out, running nothing")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.only.split(",") if args.only else [*ROWS, "train_step"]
    results = {}
    for name in names:
        if args.report_only:
            path = out / f"{name}.json"
            results[name] = json.loads(path.read_text()) if path.is_file() else None
            continue
        extra = ["--data", args.data] if args.data and name in ("pipeline", "train_step") else []
        results[name] = run(name, out, extra)
    machine = common.machine()
    lines = ["# Performance", "",
             f"Measured by `python benchmarks/run_all.py`"
             f"{' (report rebuilt with --report-only from each benchmark JSON)' if args.report_only else ''}"
             f" on {machine['platform']}, {machine['cpus']} CPUs "
             f"({machine['processor']}), Python {machine['python']}, CPU-only JAX. Every baseline is "
             "measured in the same run as the measure it is compared with. This shared machine varies "
             "by up to ~2x between runs.", "", "## CPU", ""]
    for name, result in results.items():
        if result is None:
            why = (f"not measured: no {name}.json in {os.path.relpath(out, REPO)}" if args.report_only
                   else "failed in this run (see the command's output)")
            lines += [f"### {name}", "", why + f" (`python benchmarks/{name}.py --json ...`)", ""]
        elif name == "train_step":
            lines += train_step_table(result)
        else:
            lines += table(name, result)
    lines += gpu_section(out / "gpu.json")
    Path(args.report).parent.mkdir(parents=True, exist_ok=True)
    Path(args.report).write_text("\n".join(lines) + "\n")
    print("wrote", args.report)


if __name__ == "__main__":
    main()
