# Diffusion Lab: every entry point a user or CI needs.
#   make dashboard   set up (first time) and open the Streamlit lab
#   make test        set up (first time), lint, and run the whole test suite
#   make lint        ruff check, ruff format --check, mypy
#   make screenshots  README screenshots (dashboard/screenshots/)
#   make bench       benchmarks: prints a table, writes test-artifacts/bench/latest.json
#   make gpu-check   on a CUDA machine: CUDA tests, bench and fast-recipe runs (test-artifacts/device)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser dashboard test lint bench gpu-check screenshots clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -r requirements-dev.txt
	$(PY) -m pip install --no-deps -e .
	touch $(STAMP)

# Debian's Chromium for the real-browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

dashboard: $(STAMP)
	$(PY) -m streamlit run dashboard/app.py --server.address 127.0.0.1 \
	  --browser.gatherUsageStats false --client.toolbarMode minimal

test: $(STAMP) browser lint
	$(PY) -m pytest -n 2 --dist loadgroup

# ruff (lint and format) and mypy (the sampler core), as `make test` runs them first.
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m tests.bench

gpu-check: $(STAMP)
	PYTHON=$(PY) bash tests/device_check.sh

# README screenshots of every page, taken by the real-browser test on the bundled runs.
screenshots: $(STAMP) browser
	DIFFUSION_LAB_BROWSER_RUNS=training/pretrained_runs DIFFUSION_LAB_SCREENSHOTS=dashboard/screenshots \
	  $(PY) -m pytest -m browser tests/dashboard -q

clean:
	rm -rf $(VENV) .pytest_cache
