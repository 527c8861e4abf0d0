"""One results.md row from a finished FMNIST-20k/6ep run folder: kNN top-1 after epochs 2 / 4 / 6,
the IRC diagnostics at the same evaluations (when the run has [irc]), train seconds, img/s and
peak RSS, read from the run's metrics.jsonl.

    python3 benches/run_row.py runs/<recipe>_s<seed> [more run folders...]
"""
import json
import sys


def row(run_dir):
    evals, summary = {}, None
    with open(f"{run_dir}/metrics.jsonl") as f:
        for line in f:
            d = json.loads(line)
            if d.get("kind") == "knn":
                evals[d["epoch"]] = d
            elif "train_seconds" in d:
                summary = d
            elif d.get("kind") == "summary":
                summary = d["summary"]
    if summary is None:
        return f"| {run_dir} | (not finished: no summary line) |"
    knn = " / ".join(f"{100 * evals[e]['knn_top1']:.2f}" for e in sorted(evals))
    knn = knn.rsplit(" / ", 1)
    knn = f"{knn[0]} / **{knn[1]}%**" if len(knn) == 2 else f"**{knn[0]}%**"
    cells = [summary["recipe"].removesuffix("_resnet-mini_fmnist"), str(summary["seed"]), knn]
    if any("irc_cycle_acc" in d for d in evals.values()):
        for key in ("irc_cycle_acc", "irc_return_prob", "irc_pair_precision"):
            vals = [evals[e].get(key) for e in sorted(evals)]
            cells.append(" / ".join("—" if v is None else f"{v:.3f}" for v in vals))
    cells += [f"{summary['train_seconds']:.0f}", f"{summary['img_per_s']:.0f}",
              f"{summary['peak_rss_mb']:.0f}", f"final loss {summary['final_loss']:.6f}"]
    return "| " + " | ".join(cells) + " |"


if __name__ == "__main__":
    for d in sys.argv[1:]:
        print(row(d.rstrip("/")))
