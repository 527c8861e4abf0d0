#!/usr/bin/env python3
"""torchvision v2's side of the data benchmark (docs/results.md): pairs of augmented views per
second on the cifar10-jpeg training images, with the SimCLR CIFAR view (RRC 32 (0.08-1), flip,
colour jitter 0.4/0.4/0.4/0.1 p 0.8, grayscale 0.2, to float, normalise), the same work as
`gyre --threads T bench --model none --data --data-root DIR`.

The JPEGs are decoded once into uint8 tensors (timed apart, as gyre does); then `batches` batches of
`batch` images each get two views. With --workers 0 the main process does the work on one core;
with --workers N a torch DataLoader spreads it over N processes (torchvision's way to use cores).
Run it with a torch venv outside the repo: /opt/torchvenv/bin/python benches/data_bench.py ROOT.
"""
import argparse
import json
import os
import time

import torch
import torchvision
from torchvision.transforms import v2

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def load(root):
    files = []
    for c in sorted(os.listdir(os.path.join(root, "train"))):
        d = os.path.join(root, "train", c)
        files += [os.path.join(d, f) for f in sorted(os.listdir(d))]
    t0 = time.perf_counter()
    imgs = [torchvision.io.decode_jpeg(torchvision.io.read_file(f)) for f in files]
    return imgs, time.perf_counter() - t0


class Pairs(torch.utils.data.Dataset):
    def __init__(self, imgs, n):
        self.imgs, self.n = imgs, n
        self.t = v2.Compose([
            v2.RandomResizedCrop(32, scale=(0.08, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            v2.RandomGrayscale(p=0.2),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ])

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        x = self.imgs[i % len(self.imgs)]
        return self.t(x), self.t(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--batches", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    imgs, decode_s = load(a.root)
    ds = Pairs(imgs, a.batch * a.batches)
    dl = torch.utils.data.DataLoader(ds, batch_size=a.batch, num_workers=a.workers, shuffle=False)
    t0 = time.perf_counter()
    n = 0
    for x1, _ in dl:
        n += x1.shape[0]
    secs = time.perf_counter() - t0
    print(json.dumps({
        "bench": "data", "impl": f"torchvision {torchvision.__version__}", "dataset": "cifar10-jpeg/train",
        "images": len(imgs), "decode_s": decode_s, "decode_img_per_s": len(imgs) / decode_s,
        "batch": a.batch, "batches": a.batches, "workers": a.workers, "pairs_per_s": n / secs,
    }))


if __name__ == "__main__":
    main()
