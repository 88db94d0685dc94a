# The two commands of the README quick start. Each sets everything up from nothing.
#   make run    -> virtualenv + install + train LightGCN on the embedded synthetic dataset
#   make test   -> virtualenv + install (with the dev and features extras) + the default test suite
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip

.PHONY: run test setup setup-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

setup: $(BIN)/python
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e .

setup-dev: setup
	$(PIP) install -q -e ".[dev,features]"

run: setup
	$(BIN)/python experiments/train.py experiment=quickstart

test: setup-dev
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/bench_foundation.py

clean:
	rm -rf outputs multirun .pytest_cache
