#!/usr/bin/env python3
"""Markdown rows of the language tables (docs/results.md §12.3) from scripts/language_rows.sh.

Usage: scripts/language_table.py OUT/<name>-s<seed> …  (the run prefixes language_rows.sh wrote)
One row per run: the backbone's kNN top-1 (the training run's own monitor) and linear-probe top-1
(`gyre eval --linear`); for a language run, zero-shot top-1 with the trained heads (templates +
gloss, templates, gloss) and with the untrained heads (templates + gloss), k-means + Hungarian
with both heads and its label ceiling, and the auto-pairs' WordNet precision against chance with
the number of distinct texts they use. `--texts` prints the top-texts table instead.
"""
import json
import sys


def lines(path):
    try:
        return [json.loads(l) for l in open(path) if l.strip()]
    except FileNotFoundError:
        return []


def pct(x):
    return "–" if x is None else f"{100 * x:.2f}"


def row(prefix):
    name = prefix.rsplit("/", 1)[-1]
    train = lines(prefix + ".train.json")
    knn = train[-1].get("knn_top1") if train else None
    lin = lines(prefix + ".linear.jsonl")
    probe = next((l["linear"]["top1"] for l in lin if "linear" in l), None)
    lang = lines(prefix + ".language.jsonl")
    get = lambda kind, **kw: next((r for r in lang if r["kind"] == kind
                                   and all(r.get(k) == v for k, v in kw.items())), None)
    cells = [name, pct(knn), pct(probe)]
    if lang:
        for heads, sets in [("trained", ["templates+gloss", "templates", "gloss"]),
                            ("init", ["templates+gloss"])]:
            for s in sets:
                r = get("zero_shot", heads=heads, prompts=s)
                cells.append(pct(r and r["top1"]))
        for heads in ["trained", "init"]:
            r = get("kmeans_hungarian", heads=heads)
            cells.append(pct(r and r["top1"]))
        r = get("cluster_ceiling")
        cells.append(pct(r and r["top1"]))
        r = get("auto_pair_precision", heads="trained")
        cells.append(f"{pct(r['precision'])} ({pct(r['chance'])}), {r['distinct_texts']} texts"
                     if r else "–")
    else:
        cells += ["–"] * 8
    return "| " + " | ".join(cells) + " |"


def texts(prefix):
    for r in lines(prefix + ".language.jsonl"):
        if r["kind"] == "top_texts":
            t = "; ".join(f"{x['text'][:60]} ({x['cos']:.2f})" for x in r["texts"][:3])
            print(f"| {r['index']} | {r['class']} | {t} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "--texts":
        print("| test image | class | top texts (cosine) |\n|---|---|---|")
        for p in args[1:]:
            texts(p)
    else:
        print("| run | kNN | linear | ZS T+G | ZS T | ZS G | ZS init T+G | k-means+H | "
              "k-means+H init | ceiling | auto-pair precision (chance) |")
        print("|" + "---|" * 11)
        for p in args:
            print(row(p))
