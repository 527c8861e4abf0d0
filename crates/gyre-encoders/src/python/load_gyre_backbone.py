import json

import torch
from safetensors.torch import load_file
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample = shortcut(c_in, width, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * 4)
        self.downsample = shortcut(c_in, width * 4, stride)

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


def shortcut(c_in, c_out, stride):
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class GyreResNet(nn.Module):
    """torchvision's ResNet layout and names, any depths and widths, either stem, no fc."""

    def __init__(self, cfg):
        super().__init__()
        block = BasicBlock if cfg["block"] == "basic" else Bottleneck
        w0 = cfg["widths"][0]
        if cfg["stem"] == "imagenet":
            self.conv1 = nn.Conv2d(cfg["in_channels"], w0, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        else:
            self.conv1 = nn.Conv2d(cfg["in_channels"], w0, 3, 1, 1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(w0)
        c_in, self.stages = w0, len(cfg["depths"])
        for s, (depth, width) in enumerate(zip(cfg["depths"], cfg["widths"])):
            blocks = []
            for i in range(depth):
                blocks.append(block(c_in, width, 2 if s > 0 and i == 0 else 1))
                c_in = width * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for s in range(self.stages):
            x = getattr(self, f"layer{s + 1}")(x)
        return x.mean((2, 3))


def load_gyre_backbone(folder):
    """The backbone of a gyre model folder, in eval mode, and its config (mean, std, size)."""
    with open(f"{folder}/config.json") as f:
        cfg = json.load(f)
    model = GyreResNet(cfg)
    model.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=True)
    return model.eval(), cfg
