# Two commands set everything up: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export SPARK_LOCAL_IP ?= 127.0.0.1
# pytest processes (pytest-xdist); each module runs whole in one of them (--dist loadfile). Each process holds a
# local[2] Spark of 2 GB and starts its own subprocesses: 2 suits 2 cores and 8 GB; TEST_WORKERS=0 runs serially.
# Modules are handed out longest first (tests/conftest.py orders them; xdist's own reorder, by number of tests,
# would leave the longest modules, which have few tests, for the end and one process idle meanwhile).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: install dev demo test test-fast lint format clean bench

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -U pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/python -m pip install -q -e '.[spark]'
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[spark,dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

demo: install  ## ingest, train, score and report on 1M synthetic trips plus the real sample
	$(BIN)/taxi-duration demo

test: dev  ## every test (starts local Spark, MLflow and servers on 127.0.0.1 as needed)
	$(PYTEST)

test-fast: dev  ## the inner loop: every test not marked slow (no subprocess pipelines, clusters or servers)
	$(PYTEST) -m "not slow"

lint: dev  ## ruff and mypy, as in CI
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

format: dev
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: install  ## pipeline benchmark at 1M and 10M trips -> docs/benchmarks.md
	$(BIN)/python benchmarks/pipeline.py --rows 1000000,10000000

clean:
	rm -rf $(VENV) workspace .pytest_cache .mypy_cache .ruff_cache

.PHONY: wheel
wheel: install  ## the package as a wheel in dist/ (what spark-submit --py-files and the Databricks bundle ship)
	$(BIN)/python -m pip wheel --no-deps -q -w dist .
