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

.PHONY: install test bench demo default-model clean

$(BIN)/icetools: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(FIND_LINKS) $(TORCH_PIN)
	$(BIN)/pip install --quiet $(FIND_LINKS) -e '.[dev]'
	touch $@

install: $(BIN)/icetools

test: $(BIN)/icetools
	$(BIN)/python -m pytest -q -n $(PYTEST_WORKERS) tests

bench: $(BIN)/icetools
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
