"""The per-op table of `gyre bench --ops`, timed in PyTorch: conv forward / grad-input /
grad-weight for each distinct conv of the model (CIFAR ResNet-18 at 2B = 128 images, or
resnet-mini on 1x28x28 at 2B = 512), BatchNorm2d forward, and forward + backward seeded with ones,
for each activation size, and AdamW's step over the model + projection head. Prints JSON lines;
--channels-last times the ops in that layout.

    /opt/torchvenv/bin/python benches/ops_bench.py --threads 2 [--model resnet-mini] [--channels-last] [--reps 10]
"""
import argparse, json, os, statistics, sys, time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONVS = [(3, 64, 3, 1, 32), (64, 64, 3, 1, 32), (64, 128, 3, 2, 32), (64, 128, 1, 2, 32),
         (128, 128, 3, 1, 16), (128, 256, 3, 2, 16), (128, 256, 1, 2, 16), (256, 256, 3, 1, 8),
         (256, 512, 3, 2, 8), (256, 512, 1, 2, 8), (512, 512, 3, 1, 4)]
BNS = [(64, 32), (128, 16), (256, 8), (512, 4)]
# resnet-mini (one BasicBlock per stage, widths 32-256, CIFAR stem) on 1x28x28: gyre's RESNET_MINI_CONVS.
MINI_CONVS = [(1, 32, 3, 1, 28), (32, 32, 3, 1, 28), (32, 64, 3, 2, 28), (32, 64, 1, 2, 28),
              (64, 64, 3, 1, 14), (64, 128, 3, 2, 14), (64, 128, 1, 2, 14), (128, 128, 3, 1, 7),
              (128, 256, 3, 2, 7), (128, 256, 1, 2, 7), (256, 256, 3, 1, 4)]
MINI_BNS = [(32, 28), (64, 14), (128, 7), (256, 4)]


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
    ap.add_argument("--model", choices=["resnet18", "resnet-mini"], default="resnet18")
    ap.add_argument("--images", type=int, default=0, help="default 128 (resnet18), 512 (resnet-mini)")
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

    mini = a.model == "resnet-mini"
    n = a.images or (512 if mini else 128)
    for c, o, k, s, hw in MINI_CONVS if mini else CONVS:
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
    for c, hw in MINI_BNS if mini else BNS:
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
    from step_bench import resnet18, resnet_mini, projection_head  # the reference models
    model, head = (resnet_mini(1), projection_head(256, 512, 128)) if mini else \
        (resnet18(3), projection_head(512, 2048, 128))
    params = list(model.parameters()) + list(head.parameters())
    for q in params:
        q.grad = torch.randn_like(q)
    opt = torch.optim.AdamW(params, lr=1e-6)
    count = sum(q.numel() for q in params)
    row("adamw_step", f"{count} parameters", time_ms(a.reps, opt.step))


if __name__ == "__main__":
    main()
