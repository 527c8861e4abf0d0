#!/usr/bin/env bash
# The test suite: `cargo test --release --workspace`, with the one thing it needs besides Rust — a
# Python with numpy and safetensors (no torch) for the torchvision interoperability test. The venv
# lives outside the repository (default ~/.cache/gyre/pyvenv; override with GYRE_PYVENV) and is
# made once.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GYRE_PYVENV:-$HOME/.cache/gyre/pyvenv}"
if ! "$venv/bin/python" -c "import numpy, safetensors" >/dev/null 2>&1; then
    echo "test.sh: making $venv (numpy, safetensors)"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check numpy safetensors
fi
export GYRE_PYTHON="$venv/bin/python"
cargo test --release --workspace "$@"
# The repository tasks' own tests (xtask is outside the workspace).
cargo test --manifest-path xtask/Cargo.toml --target-dir target/xtask
