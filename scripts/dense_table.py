#!/usr/bin/env python3
"""Markdown rows of the dense table (docs/results.md §10.4, §11) from `gyre eval --dense` output.

Usage: scripts/dense_table.py OUT/<run>.eval.jsonl …  (as written by scripts/dense_rows.sh)
Each file gives one row: gap-1 and gap-4 PCK@1/2/4/8, label-propagation J, the probe's mIoU over
classes and over kinds, and Aloe / Motorcycle / Graffiti PCK@2/4/8. Add `--mean` for the mean of
the files' rows (two seeds of one method) as a last row.
"""
import json
import sys


def row(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    cells = {}
    for r in rows:
        kind = r["eval"]
        if kind == "correspondence" and r.get("data", "").startswith("scenes"):
            gap = "1" if "1 apart" in r["data"] else "4"
            cells["gap" + gap] = r["pck"]
        elif kind == "correspondence":
            cells[r["data"]] = r["pck"]
        elif kind == "label-propagation":
            cells["j"] = [r["j_mean"]]
        elif kind == "pixel-probe":
            cells["probe_" + r["labels"]] = [r["miou"]]
    order = ["gap1", "gap4", "j", "probe", "middlebury-aloe", "middlebury-motorcycle",
             "oxford-graffiti-1-3"]
    out = []
    for k in order:
        if k == "probe":
            out.append(cells["probe_classes"] + cells["probe_kinds"])
        else:
            out.append(cells[k])
    return out


def fmt(cols):
    return " | ".join(" / ".join(f"{v:.3f}" for v in c) for c in cols)


def main(args):
    mean = "--mean" in args
    files = [a for a in args if a != "--mean"]
    table = [row(f) for f in files]
    for f, cols in zip(files, table):
        print(f"| {f} | {fmt(cols)} |")
    if mean and table:
        m = [[sum(t[c][i] for t in table) / len(table) for i in range(len(table[0][c]))]
             for c in range(len(table[0]))]
        print(f"| mean of {len(table)} | {fmt(m)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
