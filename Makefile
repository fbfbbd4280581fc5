# icetools developer and user entry points. Every target builds .venv first when it is missing.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch: an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN := torch==2.13.0
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PYTEST_WORKERS ?= 2

.PHONY: install test bench demo default-model examples clean
DEMO ?= demo

$(BIN)/icetools: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(FIND_LINKS) $(TORCH_PIN)
	$(BIN)/pip install --quiet $(FIND_LINKS) -e '.[dev,distributed]'
	touch $@

install: $(BIN)/icetools

test: $(BIN)/icetools
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

bench: $(BIN)/icetools
	$(BIN)/python -m bench

# The main job on a built-in example: an AI4Arctic-format scene mapped by the packaged model.
demo: $(BIN)/icetools
	mkdir -p $(DEMO)
	$(BIN)/icetools synth sea-ice $(DEMO)/scene.nc --chart-out $(DEMO)/chart.gpkg --truth-out $(DEMO)/truth.tif \
		--size 1024 --seed 7 --overwrite
	$(BIN)/icetools predict $(DEMO)/scene.nc -o $(DEMO)/sic.tif --merge gaussian --overlap 0.5 --polygons scene \
		--polygon-sic-out $(DEMO)/polygon_sic.tif --ice-water-out $(DEMO)/icewater.tif --quicklook $(DEMO)/quicklook.png --overwrite
	$(BIN)/icetools vectorize $(DEMO)/sic.tif -o $(DEMO)/sic.gpkg --bins 0.1,0.4,0.7,0.9 --min-area-px 64 --overwrite
	$(BIN)/icetools evaluate $(DEMO)/sic.tif --truth $(DEMO)/truth.tif --polygons $(DEMO)/scene.nc \
		--ice-edge 0.15 --json $(DEMO)/metrics.json --overwrite
	@echo "demo outputs in $(DEMO)/: scene.nc chart.gpkg truth.tif sic.tif polygon_sic.tif icewater.tif sic.gpkg metrics.json quicklook.png" >&2

# Rebuild the sea-ice model shipped in icetools/data/default_sic_model (about 10 CPU minutes).
default-model: $(BIN)/icetools
	$(MAKE) -C examples default-model

examples: $(BIN)/icetools
	$(MAKE) -C examples all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
