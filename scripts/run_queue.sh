#!/usr/bin/env bash
# Runs FMNIST recipes one after the other, for the rows of docs/results.md.
#
#   [THREADS=N] scripts/run_queue.sh QUEUE_FILE [GYRE_BINARY]
#
# Pops the first line of QUEUE_FILE until it is empty (append lines while it runs); a line is
#   RECIPE SEED [RUN_NAME] [--set key=value ...]
# and runs `recipes/RECIPE_resnet-mini_fmnist.toml` at THREADS threads (default 2) under
# `/usr/bin/time -v` into `runs/RUN_NAME` (default `RECIPE_sSEED`), its output in
# `QUEUE_FILE.d/RUN_NAME.out`, a start and an end line (exit code, wall seconds) in
# `QUEUE_FILE.d/log.txt`. Copy the binary somewhere first (default: a copy of target/release/gyre
# taken at start) so rebuilding does not change a queued run. Put a row in with
# `python3 benches/run_row.py runs/RUN_NAME`. Results do not depend on THREADS, but two 1-thread
# queues side by side are no faster than one at 2 threads here (1.9× scaling, results §3.3 ‡‡),
# and only 2-thread runs alone give train times comparable with the tables.
set -uo pipefail

# The whole body is one function, read before it runs: editing this file while a queue runs
# cannot change the running queue.
main() {
  cd "$(dirname "$0")/.."
  local queue=${1:?usage: scripts/run_queue.sh QUEUE_FILE [GYRE_BINARY]}
  local out="$queue.d" bin=${2:-} threads=${THREADS:-2}
  mkdir -p "$out"
  if [ -z "$bin" ]; then
    bin="$out/gyre"
    cp target/release/gyre "$bin"
  fi
  local line recipe seed name start rc
  while true; do
    line=$(head -n1 "$queue" 2>/dev/null)
    [ -z "$line" ] && break
    sed -i 1d "$queue"
    # shellcheck disable=SC2086
    set -- $line
    recipe=$1 seed=$2
    shift 2
    name=${recipe}_s${seed}
    if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then name=$1; shift; fi
    echo "$(date -u +%FT%TZ) start $name ($recipe seed $seed $*, $threads threads)" >> "$out/log.txt"
    start=$(date +%s)
    /usr/bin/time -v "$bin" --threads "$threads" train --recipe "recipes/${recipe}_resnet-mini_fmnist.toml" \
      --set seed="$seed" "$@" --run-dir "runs/$name" --quiet > "$out/$name.out" 2>&1
    rc=$?
    echo "$(date -u +%FT%TZ) end $name rc=$rc wall=$(( $(date +%s) - start ))s" >> "$out/log.txt"
  done
}

main "$@"
exit
