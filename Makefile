# joblib-rs entry points. `make demo` and `make test` each do all set-up on a fresh machine:
# a virtualenv in .venv, a release build of the package, the test tools.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Make cargo (clippy, tests) build PyO3 against the same interpreter as the package.
export PYO3_PYTHON := $(abspath $(PY))

.PHONY: demo test lint typecheck rust-test py-test install dev bench chart clean fuzz compat

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

## joblib's own test suite, then scikit-learn's joblib-heavy tests, each on joblib and on
## joblib-rs (many minutes; not part of `test`): writes docs/compatibility.md. Then
## scikit-learn on ray's and dask's joblib backends through install().
## Extra arguments: make compat COMPAT_ARGS="--files test_hashing".
compat: $(PY)
	# As `install`, plus ray (the 'ray' extra): too large for make test, which skips its test.
	$(PY) -m pip install --quiet '.[test,ray]'
	# joblib's async Memory tests need pytest-asyncio: kept out of the venv (and of make test).
	$(PY) -m pip install --quiet --no-deps --target target/compat/site 'pytest-asyncio>=0.23'
	$(PY) tests/compat/run_joblib_suite.py $(COMPAT_ARGS)
	$(PY) tests/compat/run_sklearn_suite.py
	$(PY) -m pytest -q tests/test_ray.py \
		tests/test_install.py::test_scikit_learn_on_a_dask_cluster_through_install

## Editable install with a quick optimised build, for development.
dev: $(PY)
	$(PY) -m pip install --quiet maturin
	MATURIN_PEP517_ARGS="--profile dev-fast" $(PY) -m pip install --quiet -e '.[test]'
	# Editable installs leave out the wheel's JOBLIB_RS_INSTALL start-up hook: add it.
	cp python/joblib_rs_install.pth "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/"

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
