#!/usr/bin/env bash
# Creates .venv and installs grammar-rae with its test tools. PyTorch's CPU build goes first:
# an unpinned torch would pull a multi-GB CUDA build. Re-running is safe.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet torch==2.13.0
.venv/bin/python -m pip install --quiet -e ".[test]"
.venv/bin/python -c "import grammar_rae.grammar._native" 2>/dev/null \
  || echo "note: the C parser did not build (no C compiler?); the pure-Python parser is used" >&2
echo "installed: $(.venv/bin/grammar-rae --version)"
