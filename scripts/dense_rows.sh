#!/usr/bin/env bash
# The dense CPU protocol's trained rows (docs/results.md §10): for each recipe and seed, train on
# the scene clips, then score the checkpoint with `gyre eval --dense` on 100 held-out clips
# (cifar10-jpeg test tiles and backgrounds, Fashion-MNIST t10k garments) and the real ground
# truth. Usage: scripts/dense_rows.sh OUT_DIR "recipe[:seed] …" (default seed 0).
# Writes OUT_DIR/<recipe>[-TAG]-s<seed>/ (the run) and OUT_DIR/<recipe>[-TAG]-s<seed>.eval.jsonl.
# SETS="key=value …" adds recipe overrides to every row (TAG names them in the run's folder):
#   SETS="train.epochs=2" TAG=2ep scripts/dense_rows.sh OUT recipes/pixpro_resnet-mini_scenes.toml:1
set -euo pipefail
cd "$(dirname "$0")/.."
out="$1"
shift
gyre="${GYRE:-target/release/gyre}"
cifar="${CIFAR10_JPEG_DIR:-../shared/data/cifar10-jpeg}"
sets=()
for kv in ${SETS:-}; do sets+=(--set "$kv"); done
tag="${TAG:+-$TAG}"
mkdir -p "$out"
for spec in "$@"; do
    recipe="${spec%%:*}"
    seed=0
    [[ "$spec" == *:* ]] && seed="${spec##*:}"
    name="$(basename "$recipe" .toml)$tag-s$seed"
    run="$out/$name"
    # The binary may be older than the tree (a copy kept apart from rebuilds): record its commit
    # with the rows; this line names the tree's.
    echo "== $name: $(date -u +%FT%TZ) binary $gyre, tree at $(git rev-parse --short HEAD)"
    "$gyre" train --quiet --recipe "$recipe" --set seed="$seed" "${sets[@]}" --run-dir "$run" >"$run.train.json"
    "$gyre" eval --dense --checkpoint "$run" --scenes-from "$cifar" --dense-gt data/dense-gt \
        >"$run.eval.jsonl"
    echo "== $name done: $(date -u +%FT%TZ)"
done
