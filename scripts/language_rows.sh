#!/usr/bin/env bash
# The language level's trained rows (docs/results.md §12): for each recipe and seed, train, then
# score the checkpoint with `gyre eval --language` (zero-shot, k-means + Hungarian, auto-pair
# precision, top texts; the grid picture) and `gyre eval --linear` (kNN and the linear probe of
# the backbone, for "does language help the image encoder?"). A base recipe without [irc] gets
# only the kNN and the probe. Usage: scripts/language_rows.sh OUT_DIR "recipe[:seed] …".
# Writes OUT_DIR/<recipe>[-TAG]-s<seed>/ (the run, with grid.png), <…>.train.json,
# <…>.language.jsonl and <…>.linear.jsonl. SETS="key=value …" and TAG as in dense_rows.sh.
# Run `gyre text embed --recipe <a language recipe>` once first (the corpus cache, ~9 min).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$1"
shift
gyre="${GYRE:-target/release/gyre}"
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
    echo "== $name: $(date -u +%FT%TZ) binary $gyre, tree at $(git rev-parse --short HEAD)"
    "$gyre" train --quiet --recipe "$recipe" --set seed="$seed" "${sets[@]}" --run-dir "$run" >"$run.train.json"
    if grep -q 'level = "language"' "$run/recipe.toml"; then
        "$gyre" eval --language --checkpoint "$run" --grid "$run/grid.png" >"$run.language.jsonl"
    fi
    "$gyre" eval --checkpoint "$run" --linear >"$run.linear.jsonl"
    echo "== $name done: $(date -u +%FT%TZ)"
done
