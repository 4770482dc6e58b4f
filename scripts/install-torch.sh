#!/usr/bin/env sh
# Install PyTorch into the given interpreter's environment without pulling a
# multi-GB CUDA build onto a machine that has no GPU.
#   usage: scripts/install-torch.sh PYTHON
set -eu
PY="$1"
VERSION="2.13.0"
if "$PY" -c "import torch" 2>/dev/null; then
    exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install "torch==$VERSION"
else
    # The +cpu build: from a local wheel cache if pip knows one, else from PyTorch's CPU index.
    "$PY" -m pip install "torch==$VERSION+cpu" \
        || "$PY" -m pip install "torch==$VERSION" --index-url https://download.pytorch.org/whl/cpu
fi
