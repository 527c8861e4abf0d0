#!/usr/bin/env bash
# Side-by-side training-step benchmark: gyre, then PyTorch NCHW, then PyTorch channels-last, for
# each reference shape, one right after the other, same threads. Prints JSON lines.
#   TORCH_PY=/path/to/venv/bin/python benches/side_by_side.sh [steps] [threads]
# torch lives in a venv outside the repo (python3 -m venv DIR && DIR/bin/pip install torch).
# BEFORE=1 also times gyre with candle's stock ops (GYRE_KERNELS=reference; 3 steps, it is slow).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TORCH_PY:-/opt/torchvenv/bin/python}
STEPS=${1:-20}
THREADS=${2:-2}
REF=${STEP_BENCH:-../shared/reference/step_bench.py}
cargo build --release --quiet -p gyre-cli --bin gyre
for case in "resnet-mini 256 28 1" "resnet18 64 32 3"; do
  set -- $case
  if [ "${BEFORE:-0}" = 1 ]; then
    GYRE_KERNELS=reference ./target/release/gyre --threads "$THREADS" bench --model "$1" --batch "$2" --steps 3 --warmup 1 | sed 's/"impl":"gyre"/"impl":"gyre-stock-candle"/'
  fi
  ./target/release/gyre --threads "$THREADS" bench --model "$1" --batch "$2" --steps "$STEPS" --warmup 3
  "$PY" "$REF" --device cpu --threads "$THREADS" --model "$1" --batch "$2" --size "$3" --in-ch "$4" --steps "$STEPS" --warmup 3 2>/dev/null | tail -n 1
  "$PY" "$REF" --device cpu --threads "$THREADS" --model "$1" --batch "$2" --size "$3" --in-ch "$4" --steps "$STEPS" --warmup 3 --channels-last 2>/dev/null | tail -n 1
done
