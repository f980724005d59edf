# joblib-rs entry points. `make demo` and `make test` each do all set-up on a fresh machine:
# a virtualenv in .venv, a release build of the package, the test tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Make cargo (clippy, tests) build PyO3 against the same interpreter as the package.
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: demo test lint typecheck rust-test py-test install dev bench chart clean fuzz

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

## Release build of the package plus the test dependencies, into .venv.
install: $(PY)
	$(PY) -m pip install --quiet '.[test]'

## The main job: a short tour of what joblib-rs does, with timings against joblib.
demo: install
	$(PY) demo/demo.py

## Every test: formatting (cargo fmt, ruff format), lints, type hints, the Rust core's tests, ruff, pytest.
test: install lint typecheck rust-test py-test

lint: $(PY)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests benchmarks demo
	$(VENV)/bin/ruff format --check python tests benchmarks demo

## The public API's type hints (py.typed, _core.pyi) against a typed usage example.
typecheck: $(PY)
	$(VENV)/bin/mypy --strict tests/typecheck/usage.py

rust-test:
	cargo test --workspace

py-test:
	$(PY) -m pytest

## Editable install with a quick optimised build, for development.
dev: $(PY)
	$(PY) -m pip install --quiet maturin
	MATURIN_PEP517_ARGS="--profile dev-fast" $(PY) -m pip install --quiet -e '.[test]'

## A longer fuzzing campaign of load(..., allowed="safe") (make test runs 3,000 cases).
fuzz: install
	cd tests && ../$(PY) fuzz_safe_load.py --examples $${EXAMPLES:-200000} --seed $${SEED:-0}

## Side-by-side benchmarks against joblib.
bench: install
	$(PY) benchmarks/run.py

## Quick benchmarks into benchmarks/results.json, drawn into docs/benchmarks.png.
chart: install
	$(PY) -m pip install --quiet 'matplotlib>=3.8'  # the 'bench' extra
	$(PY) benchmarks/run.py --quick --json benchmarks/results.json
	$(PY) benchmarks/chart.py benchmarks/results.json -o docs/benchmarks.png --markdown

clean:
	rm -rf $(VENV) target
