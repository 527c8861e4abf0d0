#!/usr/bin/env bash
# The test suite: `cargo test --release --workspace`, after scripts/prepare.sh has made what it
# needs besides Rust (a pinned Python venv outside the repository for the PyTorch
# interoperability tests; the real dense ground truth, WordNet and MiniLM under data/), then the
# repository tasks' own tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/prepare.sh
export GYRE_PYTHON="${GYRE_PYVENV:-$HOME/.cache/gyre/pyvenv}/bin/python"
cargo test --release --workspace "$@"
# The repository tasks' own tests (xtask is outside the workspace).
cargo test --manifest-path xtask/Cargo.toml --target-dir target/xtask
