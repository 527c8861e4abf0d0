"""The FMNIST-20k/6ep protocol in PyTorch with lightly's losses and heads, for kNN parity beside
gyre's rows (docs/results.md §13): the same data (the first 20,000 Fashion-MNIST training images;
kNN bank = all 60,000 training images, queries = the 10,000 test images, k 200, t 0.1, cosine,
features of the pooled backbone), the same backbone (gyre's resnet-mini, from the model card's
PyTorch loader), batch 256, 6 epochs, LARS (lightly's) with gyre's recipe settings, warm-up 1 epoch
then cosine, per step. Augmentations are torchvision's equivalents of the recipe's: random resized
crop (scale, ratio 3/4–4/3), horizontal flip 0.5, colour jitter p 0.8 (brightness 0.4, contrast
0.4). It mirrors the recipes, not gyre's code: lightly's `BarlowTwinsLoss`, `VICRegLoss`,
`DINOLoss`, `SwaVLoss` with their heads.

    python benches/lightly_fmnist.py --method dino --threads 2 --out row.json

torch, torchvision and lightly live in a venv outside the repository
(`python3 -m venv V && V/bin/pip install torch==2.15.0 torchvision lightly`).
"""
import argparse
import copy
import gzip
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2 as T

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "crates", "gyre-encoders", "src", "python"))
from load_gyre_backbone import GyreResNet  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.286, 0.353


def idx(path):
    with gzip.open(path) as f:
        data = f.read()
    magic = int.from_bytes(data[:4], "big")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(magic & 0xFF)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def pipeline(size, scale):
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=scale, antialias=True),
            T.RandomHorizontalFlip(0.5),
            T.RandomApply([T.ColorJitter(0.4, 0.4)], p=0.8),
            T.Normalize([MEAN], [STD]),
        ]
    )


def views_of(x, pipes):
    """Each pipeline applied to each image of the uint8 batch x [B, 28, 28] (a fresh draw per
    image), as float tensors [B, 1, s, s]."""
    xs = torch.from_numpy(x).float().div(255).unsqueeze(1)
    return [torch.stack([p(img) for img in xs]) for p in pipes]


def backbone():
    cfg = {"block": "basic", "depths": [1, 1, 1, 1], "widths": [32, 64, 128, 256],
           "stem": "cifar", "in_channels": 1}
    return GyreResNet(cfg)


def mlp(dims, bn=True, act=nn.ReLU, last_bias=True):
    layers = []
    for i in range(len(dims) - 2):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=not bn)]
        if bn:
            layers += [nn.BatchNorm1d(dims[i + 1])]
        layers += [act()]
    layers += [nn.Linear(dims[-2], dims[-1], bias=last_bias)]
    return nn.Sequential(*layers)


class Method(nn.Module):
    """One of the four methods: `pipes` (the views), `loss(views, epoch, step)`."""

    def __init__(self, name, total_steps):
        super().__init__()
        from lightly import loss as L
        from lightly.models.modules import heads as H

        self.name, self.total = name, total_steps
        self.backbone = backbone()
        g = (28, (0.4, 1.0))
        if name in ("barlowtwins", "vicreg"):
            # Recipes: views 28 px at (0.2, 1), projector 3 x 1024 with BN.
            self.pipes = [pipeline(28, (0.2, 1.0))] * 2
            self.head = mlp([256, 1024, 1024, 1024])
            self.criterion = (L.BarlowTwinsLoss(lambda_param=5e-3) if name == "barlowtwins"
                              else L.VICRegLoss())
            self.scale = 0.1 if name == "barlowtwins" else 1.0
            self.lr, self.wd = 0.3, 1e-4
        elif name == "dino":
            self.pipes = [pipeline(*g)] * 2 + [pipeline(12, (0.05, 0.4))] * 4
            self.head = H.DINOProjectionHead(256, 1024, 256, 4096, batch_norm=False,
                                             freeze_last_layer=1, norm_last_layer=True)
            self.teacher_backbone = copy.deepcopy(self.backbone)
            self.teacher_head = H.DINOProjectionHead(256, 1024, 256, 4096, batch_norm=False)
            self.teacher_head.load_state_dict(self.head.state_dict())
            for p in list(self.teacher_backbone.parameters()) + list(self.teacher_head.parameters()):
                p.requires_grad = False
            self.criterion = L.DINOLoss(output_dim=4096, warmup_teacher_temp=0.07,
                                        teacher_temp=0.07, warmup_teacher_temp_epochs=0)
            self.lr, self.wd = 0.3, 1e-6
        elif name == "swav":
            self.pipes = [pipeline(*g)] * 2 + [pipeline(12, (0.05, 0.4))] * 4
            self.head = H.SwaVProjectionHead(256, 1024, 128)
            self.prototypes = H.SwaVPrototypes(128, 3000, n_steps_frozen_prototypes=1)
            self.criterion = L.SwaVLoss()
            from lightly.models.modules.memory_bank import MemoryBankModule
            self.queues = nn.ModuleList([MemoryBankModule(size=(3840, 128)) for _ in range(2)])
            self.lr, self.wd = 0.6, 1e-6
        else:
            raise SystemExit(f"unknown method {name}")

    def loss(self, views, epoch, step):
        if self.name in ("barlowtwins", "vicreg"):
            z = [self.head(self.backbone(v)) for v in views]
            return self.criterion(z[0], z[1]) * self.scale
        if self.name == "dino":
            from lightly.utils.scheduler import cosine_schedule
            from lightly.models.utils import update_momentum
            m = cosine_schedule(step, self.total, 0.996, 1.0)
            update_momentum(self.backbone, self.teacher_backbone, m)
            update_momentum(self.head, self.teacher_head, m)
            with torch.no_grad():
                t = [self.teacher_head(self.teacher_backbone(v)) for v in views[:2]]
            s = [self.head(self.backbone(v)) for v in views]
            return self.criterion(t, s, epoch=epoch)
        # SwAV
        self.prototypes.normalize()
        z = [F.normalize(self.head(self.backbone(v)), dim=1) for v in views]
        p = [self.prototypes(x, epoch) for x in z]
        queue = None
        if epoch >= 2:
            queue = []
            for i in range(2):
                _, bank = self.queues[i](z[i].detach(), update=True)
                queue.append(self.prototypes(bank.permute(1, 0).to(z[i].dtype), epoch))
        else:
            for i in range(2):
                self.queues[i](z[i].detach(), update=True)
        return self.criterion(p[:2], p[2:], queue)

    def after_backward(self, epoch):
        if self.name == "dino":
            self.head.cancel_last_layer_gradients(current_epoch=epoch)


@torch.no_grad()
def features(model, x, bs=1000):
    model.eval()
    out = []
    for i in range(0, len(x), bs):
        xs = torch.from_numpy(x[i : i + bs]).float().div(255).unsqueeze(1)
        out.append(F.normalize(model((xs - MEAN) / STD), dim=1))
    model.train()
    return torch.cat(out)


@torch.no_grad()
def knn(model, bank_x, bank_y, qx, qy, k=200, t=0.1):
    fb, fq = features(model, bank_x), features(model, qx)
    yb = torch.from_numpy(bank_y.astype(np.int64))
    correct = 0
    for i in range(0, len(fq), 500):
        sim = fq[i : i + 500] @ fb.T
        w, j = sim.topk(k, dim=1)
        w = (w / t).exp()
        votes = torch.zeros(len(j), 10).scatter_add_(1, yb[j], w)
        correct += (votes.argmax(1) == torch.from_numpy(qy[i : i + 500].astype(np.int64))).sum().item()
    return correct / len(fq)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--subset", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    from lightly.utils.lars import LARS

    tx = idx(f"{FMNIST}/train-images-idx3-ubyte.gz")
    ty = idx(f"{FMNIST}/train-labels-idx1-ubyte.gz")
    qx = idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")
    qy = idx(f"{FMNIST}/t10k-labels-idx1-ubyte.gz")
    px = tx[: a.subset]
    b = 256
    steps_per_epoch = len(px) // b
    total = steps_per_epoch * a.epochs
    model = Method(a.method, total)
    params = [p for n, p in model.named_parameters()
              if p.requires_grad and not n.startswith("teacher")]
    # LARS as the recipes: no decay on BatchNorm and biases (lightly then skips their adaptation
    # too); lightly's LARS has no `clip_lr`, the recipes clip.
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    opt = LARS([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
               lr=model.lr, momentum=0.9, weight_decay=model.wd, trust_coefficient=0.02)
    rows, start = [], time.time()
    rng = np.random.default_rng(a.seed)
    step = 0
    for epoch in range(a.epochs):
        perm = rng.permutation(len(px))
        for s in range(steps_per_epoch):
            warm = steps_per_epoch
            lr = (model.lr * (step + 1) / warm if step < warm else
                  model.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm))))
            for g in opt.param_groups:
                g["lr"] = lr
            views = views_of(px[perm[s * b : (s + 1) * b]], model.pipes)
            loss = model.loss(views, epoch, step)
            opt.zero_grad()
            loss.backward()
            model.after_backward(epoch)
            opt.step()
            step += 1
            if step % 20 == 0:
                print(json.dumps({"step": step, "loss": loss.item(), "lr": lr}), flush=True)
        if (epoch + 1) % 2 == 0:
            top1 = knn(model.backbone, tx, ty, qx, qy)
            rows.append({"epoch": epoch + 1, "knn_top1": top1})
            print(json.dumps(rows[-1]), flush=True)
    out = {"method": a.method, "impl": "lightly", "seed": a.seed, "threads": a.threads,
           "knn": rows, "train_seconds": time.time() - start,
           "torch": torch.__version__, "lightly": __import__("lightly").__version__}
    print(json.dumps(out))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f)


if __name__ == "__main__":
    main()
