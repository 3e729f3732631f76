"""Builds an HGCAL cell geometry and saves it as one .npz, printing its summary.

  python scripts/make_geometry.py synthetic --config configs/default.py --out runs/demo/geometry.npz
  python scripts/make_geometry.py synthetic --config configs/default.py:smoke --out /tmp/g.npz \
      --config.geometry.layers=1-28 --config.geometry.zsides=+
  python scripts/make_geometry.py cmssw --input test_triggergeom.root --out geometry_cmssw.npz
  python scripts/make_geometry.py from-ntuple \
      --input ../shared/data/hgcal_ntuple_muons_35GeV_2ev.root --out geometry_ntuple.npz

Sub-commands: synthetic (the v8-like default), cmssw (the trigger-geometry tester's TreeCells),
from-ntuple (cells seen in `ana/hgc` ntuples). --config is optional for cmssw and from-ntuple;
its geometry section then selects layers and endcaps.
"""

import time

from absl import flags

from hgcal_jax import cli
from hgcal_jax.geometry import io, sources, summary

_OUT = flags.DEFINE_string("out", None, "Output .npz path.", required=True)
_INPUT = flags.DEFINE_string("input", "", "Input ROOT file(s), comma-separated (cmssw, from-ntuple).")
_COMMANDS = {"synthetic": "synthetic", "cmssw": "cmssw", "from-ntuple": "ntuple"}


def main(argv):
    if len(argv) != 2 or argv[1] not in _COMMANDS:
        raise cli.ConfigError(f"usage: make_geometry.py {{{'|'.join(_COMMANDS)}}} --out PATH [...]")
    source = _COMMANDS[argv[1]]
    if flags.FLAGS["config"].present:
        cfg = cli.config().geometry
    else:
        cfg = cli.load(cli.DEFAULT_CONFIG).geometry
        if source != "synthetic":
            cfg.layers = "all"  # keep every layer a file has (the real ntuple has 52)
    with cfg.unlocked():
        cfg.source = source
        if _INPUT.value:
            cfg.path = _INPUT.value
    start = time.perf_counter()
    geometry = sources.from_config(cfg)
    built_s = time.perf_counter() - start
    digest = io.save(geometry, _OUT.value)
    print(summary.summary(geometry, digest))
    print(f"built in {built_s:.2f} s, saved {_OUT.value} ({time.perf_counter() - start:.2f} s total)")


if __name__ == "__main__":
    cli.run(main)
