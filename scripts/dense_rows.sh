#!/usr/bin/env bash
# The dense CPU protocol's trained rows (docs/results.md §10): for each recipe and seed, train on
# the scene clips, then score the checkpoint with `gyre eval --dense` on 100 held-out clips
# (cifar10-jpeg test tiles and backgrounds, Fashion-MNIST t10k garments) and the real ground
# truth. Usage: scripts/dense_rows.sh OUT_DIR "recipe[:seed] …" (default seed 0).
# Writes OUT_DIR/<recipe>-s<seed>/ (the run) and OUT_DIR/<recipe>-s<seed>.eval.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$1"
shift
gyre="${GYRE:-target/release/gyre}"
cifar="${CIFAR10_JPEG_DIR:-../shared/data/cifar10-jpeg}"
mkdir -p "$out"
for spec in "$@"; do
    recipe="${spec%%:*}"
    seed=0
    [[ "$spec" == *:* ]] && seed="${spec##*:}"
    name="$(basename "$recipe" .toml)-s$seed"
    run="$out/$name"
    echo "== $name: $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)"
    "$gyre" train --quiet --recipe "$recipe" --set seed="$seed" --run-dir "$run" >"$run.train.json"
    "$gyre" eval --dense --checkpoint "$run" --scenes-from "$cifar" --dense-gt data/dense-gt \
        >"$run.eval.jsonl"
    echo "== $name done: $(date -u +%FT%TZ)"
done
