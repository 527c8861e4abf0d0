"""Joins the JSON lines of `gyre bench --ops` and ops_bench.py (NCHW, channels-last) into the
markdown per-op table of docs/results.md: median ms per op, ratio gyre / faster PyTorch layout.

    python3 benches/ops_table.py gyre.jsonl nchw.jsonl cl.jsonl
"""
import json, sys

rows = {}
for path in sys.argv[1:]:
    for line in open(path):
        r = json.loads(line)
        if r.get("bench") != "op" or "ms_median" not in r:
            continue
        rows.setdefault((r["op"], r["shape"]), {})[r["impl"]] = r["ms_median"]

tot = {"gyre": 0.0, "pytorch-nchw": 0.0, "pytorch-channels-last": 0.0, "best": 0.0}
print("| op | shape | gyre ms | PyTorch NCHW ms | PyTorch channels-last ms | gyre / faster PyTorch |")
print("|---|---|---|---|---|---|")
for (op, shape), v in rows.items():
    g, n, c = v.get("gyre"), v.get("pytorch-nchw"), v.get("pytorch-channels-last")
    best = min(x for x in (n, c) if x is not None)
    for k, x in (("gyre", g), ("pytorch-nchw", n), ("pytorch-channels-last", c), ("best", best)):
        tot[k] += x or 0.0
    f = lambda x: "–" if x is None else f"{x:.2f}"
    print(f"| {op} | {shape} | {f(g)} | {f(n)} | {f(c)} | {g / best:.2f}× |")
print(f"| **sum** | | **{tot['gyre']:.1f}** | {tot['pytorch-nchw']:.1f} | {tot['pytorch-channels-last']:.1f} "
      f"| **{tot['gyre'] / tot['best']:.2f}×** (vs per-op best {tot['best']:.1f}) |")
