# Two commands for a fresh machine:
#   make demo   installs into .venv and runs the quickstart end to end (offline)
#   make test   installs into .venv (with the dev extras) and runs the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-dev bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

demo: install
	PATH="$(abspath $(BIN)):$$PATH" bash examples/quickstart/demo.sh

test: install-dev
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python bench/bench_metrics.py
	$(BIN)/python bench/bench_drift.py
	$(BIN)/python bench/bench_cli.py
	$(BIN)/python bench/bench_build.py
	$(BIN)/python bench/bench_durable_write.py
	$(BIN)/python bench/bench_online.py
	$(BIN)/python bench/bench_mirror.py
	$(BIN)/python bench/bench_backends.py

clean:
	rm -rf $(VENV) .pytest_cache out
