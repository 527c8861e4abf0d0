#!/usr/bin/env bash
# The interrupted-then-resumed check of docs/results.md §8.2: trains a recipe once straight
# through and once stopped by SIGTERM (or SIGINT) at a step, then `--resume`d, and compares the
# loss of every step. Prints one JSON line.
#   scripts/interrupt_resume.sh OUT_DIR STOP_AT_STEP [SIGNAL] -- [gyre train flags…]
# e.g. scripts/interrupt_resume.sh /tmp/ir 4 TERM -- --set data.subset=2000 --set train.epochs=2
set -euo pipefail
out=$1 at=$2 sig=${3:-TERM}
shift 3
[ "${1:-}" = "--" ] && shift
bin=$(cd "$(dirname "$0")/.." && pwd)/target/release/gyre
[ -x "$bin" ] || { echo "build first: cargo build --release -p gyre-cli" >&2; exit 1; }
rm -rf "$out" && mkdir -p "$out"
common=(--threads 2 train --quiet --set train.log_every=1 "$@")
"$bin" "${common[@]}" --run-dir "$out/full" > "$out/full.json"
"$bin" "${common[@]}" --run-dir "$out/cut" > /dev/null 2> "$out/cut.stderr" &
pid=$!
until grep -q "\"step\":$at[,}]" "$out/cut/metrics.jsonl" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "the run ended before step $at" >&2; exit 1; }
    sleep 0.05
done
kill -"$sig" "$pid"
set +e; wait "$pid"; status=$?; set -e
stopped=$(python3 -c "import json; print(json.load(open('$out/cut/checkpoint.json'))['step'])")
"$bin" --threads 2 train --quiet --resume "$out/cut" > "$out/resumed.json"
python3 - "$out" "$status" "$stopped" "$sig" <<'PY'
import json, sys
out, status, stopped, sig = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
def losses(run):
    rows = [json.loads(l) for l in open(f"{out}/{run}/metrics.jsonl")]
    return [(r["step"], r["loss"]) for r in rows if r["kind"] == "step"]
a, b = losses("full"), losses("cut")
knn = lambda f: json.loads(open(f"{out}/{f}.json").read().splitlines()[-1])["knn_top1"]
print(json.dumps({"signal": sig, "exit_status": status, "checkpoint_step": stopped,
                  "steps": len(a), "identical_losses": a == b,
                  "steps_differing": sum(x != y for x, y in zip(a, b)),
                  "knn_full": knn("full"), "knn_resumed": knn("resumed")}))
PY
