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

# Fashion-MNIST for the tutorial (scripts/pytorch_tutorial.py), from the Debian package
# dataset-fashion-mnist: installed where apt is available and allowed (root or
# passwordless sudo) and the files are missing. Skipped in CI (CI=true): the tests use
# scikit-learn's digits. Nothing here can make the script fail.
FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
FASHION_MNIST_CMD="sudo apt-get install dataset-fashion-mnist"
if [ "${CI:-}" != "true" ] && [ ! -e "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
      SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      SUDO=(false)
    fi
    if [ "${SUDO[0]:-}" != "false" ]; then
      echo "Installing Fashion-MNIST: apt-get install dataset-fashion-mnist"
      { "${SUDO[@]}" apt-get install -y -q dataset-fashion-mnist \
          || { "${SUDO[@]}" apt-get update -q && \
               "${SUDO[@]}" apt-get install -y -q dataset-fashion-mnist; }; } \
        >/dev/null 2>&1 || true
    fi
  fi
  if [ ! -e "$FASHION_MNIST_DIR/train-images-idx3-ubyte.gz" ]; then
    echo "Fashion-MNIST is not installed, so the tutorial will train on scikit-learn's"
    echo "8x8 digits. To train on Fashion-MNIST, run: $FASHION_MNIST_CMD"
  fi
fi
