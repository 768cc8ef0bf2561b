#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with everything the
# tutorial, the tests and the docs need. Safe to run again; it only installs what is
# missing.
#
#   TORCH_SPEC   which torch to install when none is there (default: torch==2.13.0;
#                e.g. "torch --index-url https://download.pytorch.org/whl/cpu")
#   VENV         where to put the environment (default: .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Install torch first so that the project's range (torch>=2.4) is already met and pip
# does not pull a multi-GB CUDA build.
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet ${TORCH_SPEC:-torch==2.13.0}
fi
"$VENV/bin/pip" install --quiet -e ".[dev,scripts,docs]"
