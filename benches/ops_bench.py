"""The per-op table of `gyre bench --ops`, timed in PyTorch: conv forward / grad-input /
grad-weight for each distinct conv of the CIFAR ResNet-18 at 2B = 128 images, BatchNorm2d
forward, and forward + backward seeded with ones, for each activation size, and AdamW's step over the
model + projection head. Prints JSON lines; --channels-last times the convs in that layout.

    /opt/torchvenv/bin/python benches/ops_bench.py --threads 2 [--channels-last] [--reps 10]
"""
import argparse, json, os, statistics, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONVS = [(3, 64, 3, 1, 32), (64, 64, 3, 1, 32), (64, 128, 3, 2, 32), (64, 128, 1, 2, 32),
         (128, 128, 3, 1, 16), (128, 256, 3, 2, 16), (128, 256, 1, 2, 16), (256, 256, 3, 1, 8),
         (256, 512, 3, 2, 8), (256, 512, 1, 2, 8), (512, 512, 3, 1, 4)]
BNS = [(64, 32), (128, 16), (256, 8), (512, 4)]


def time_ms(reps, f):
    f()
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        t.append((time.perf_counter() - t0) * 1e3)
    t.sort()
    return t[len(t) // 2], t[0], t[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    impl = "pytorch-channels-last" if a.channels_last else "pytorch-nchw"
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format

    def row(op, shape, ms):
        print(json.dumps({"bench": "op", "impl": impl, "op": op, "shape": shape, "ms_median": ms[0],
                          "ms_min": ms[1], "ms_max": ms[2], "threads": a.threads}), flush=True)

    n = a.images
    for c, o, k, s, hw in CONVS:
        p = k // 2
        x = torch.randn(n, c, hw, hw).to(memory_format=fmt)
        w = torch.randn(o, c, k, k).to(memory_format=fmt)
        ho = (hw + 2 * p - k) // s + 1
        dy = torch.randn(n, o, ho, ho).to(memory_format=fmt)
        shape = f"{n}x{c}x{hw}x{hw} -> {o}, {k}x{k} s{s}"
        mask = [True, False, False]
        with torch.no_grad():
            row("conv_forward", shape, time_ms(a.reps, lambda: F.conv2d(x, w, None, s, p)))
            bwd = lambda m: torch.ops.aten.convolution_backward(
                dy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, m)
            row("conv_grad_input", shape, time_ms(a.reps, lambda: bwd([True, False, False])))
            row("conv_grad_weight", shape, time_ms(a.reps, lambda: bwd([False, True, False])))
    for c, hw in BNS:
        bn = nn.BatchNorm2d(c)
        x = torch.randn(n, c, hw, hw).to(memory_format=fmt).requires_grad_()
        ones = torch.ones(n, c, hw, hw).to(memory_format=fmt)
        label = f"{n}x{c}x{hw}x{hw}"
        row("batch_norm_forward", label, time_ms(a.reps, lambda: bn(x)))

        def fb():
            x.grad = None
            bn(x).backward(ones)
        row("batch_norm_fwd_bwd", label, time_ms(a.reps, fb))

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "shared", "reference"))
    from step_bench import resnet18  # the reference model, so the parameter set is the same
    model = resnet18(3)
    head = nn.Sequential(nn.Linear(512, 2048, bias=False), nn.BatchNorm1d(2048), nn.ReLU(),
                         nn.Linear(2048, 128))
    params = list(model.parameters()) + list(head.parameters())
    for q in params:
        q.grad = torch.randn_like(q)
    opt = torch.optim.AdamW(params, lr=1e-6)
    count = sum(q.numel() for q in params)
    row("adamw_step", f"{count} parameters", time_ms(a.reps, opt.step))


if __name__ == "__main__":
    main()
