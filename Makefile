# Two commands set everything up: `make demo` and `make test`. Both create .venv and install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export SPARK_LOCAL_IP ?= 127.0.0.1

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
	$(BIN)/python -m pytest

test-fast: dev  ## the inner loop: every test not marked slow (no subprocess pipelines, clusters or servers)
	$(BIN)/python -m pytest -m "not slow"

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
