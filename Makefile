# The front door. `make test` and `make run` work on a fresh clone: the first
# target that needs Python creates .venv and installs the pinned requirements.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | sha1sum | cut -c1-12)
# The Cloud Tasks emulator pins protobuf<5: it lives in a virtual environment of its own.
TASKS_VENV := .venv-tasks
TASKS_STAMP := $(TASKS_VENV)/.installed-$(shell sha1sum requirements-tasks-emulator.txt | cut -c1-12)
export PYTHONPATH := $(CURDIR)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv lint typecheck unit integration test run bench bench-ingest bench-e2e bench-backfill reliability clean

venv: $(STAMP) $(TASKS_STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

$(TASKS_STAMP): requirements-tasks-emulator.txt
	test -x $(TASKS_VENV)/bin/python || $(PYTHON) -m venv $(TASKS_VENV)
	$(TASKS_VENV)/bin/python -m pip install -q -r requirements-tasks-emulator.txt
	rm -f $(TASKS_VENV)/.installed-*
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy shared ingest_fn ops tests

unit: venv
	$(BIN)/pytest tests/unit

integration: venv
	$(BIN)/pytest tests/integration

# Everything CI runs: static checks, then unit and integration tests on the real emulators.
test: lint typecheck
	$(BIN)/pytest

# The whole pipeline on local emulators; Ctrl-C stops it all.
run: venv
	$(PY) -m ops.local

# Benchmarks are scripts that print figures; `make bench` runs all three.
bench-ingest: venv
	$(PY) -m ops.bench_ingest

bench-e2e: venv
	$(PY) -m ops.bench_e2e

bench-backfill: venv
	$(PY) -m ops.bench_backfill

bench: bench-ingest bench-e2e bench-backfill

# The full reliability suite (10,000 webhooks, faults, fuzzing); CI runs a small one in `make test`.
reliability: venv
	$(PY) -m ops.reliability
	FUZZ_EXAMPLES=3000 $(BIN)/pytest tests/unit/test_fuzz_ingest.py tests/integration/test_fuzz_push.py

clean:
	rm -rf $(VENV) $(TASKS_VENV) .pytest_cache .mypy_cache .ruff_cache
