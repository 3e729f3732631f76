# Two commands on a fresh machine with Python >= 3.10 and the package index:
#   make demo   the main job end to end on the embedded default
#   make test   the test suite (fast; `make test-all` adds the slow end-to-end tests)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUNS ?= runs/demo
CONFIG ?= configs/default.py

.PHONY: demo demo-long test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/make_geometry.py synthetic --config $(CONFIG) --out $(RUNS)/geometry.npz
	$(PY) scripts/make_table.py --config $(CONFIG) --geometry $(RUNS)/geometry.npz \
	    --config.interpolation.cache_dir=$(RUNS)/cache
	$(PY) scripts/simulate.py --config $(CONFIG) --geometry $(RUNS)/geometry.npz \
	    --config.data.dir=$(RUNS)/data
	$(PY) scripts/train.py --config $(CONFIG) --workdir $(RUNS)/train \
	    --config.data.dir=$(RUNS)/data --config.data.geometry=$(RUNS)/geometry.npz \
	    --config.interpolation.cache_dir=$(RUNS)/cache
	$(PY) scripts/evaluate.py --workdir $(RUNS)/train --split test

# The main job with 5x the simulated events and 2x the steps (~35 min on 2 cores).
demo-long:
	$(MAKE) demo CONFIG=configs/default.py:long RUNS=runs/long

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n 2

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2

lint: $(STAMP)
	$(PY) -m ruff check hgcal_jax scripts tests benchmarks configs

bench: $(STAMP)
	$(PY) benchmarks/run_all.py --out runs/bench --report docs/performance.md

clean:
	rm -rf $(VENV) runs .pytest_cache
