#!/usr/bin/env python3
"""The Python side of the model-card loader test (tests/torchvision_interop.rs), with torch.

  pytorch_loader_check.py LOADER.py FOLDER IO.safetensors

Runs the loader code a model card embeds (LOADER.py) on an exported model FOLDER, feeds it the
tensor `x` of IO.safetensors and compares its output with `features` (gyre's eval-mode forward of
the same input). Prints {"max_abs_diff": …, "max_abs": …, "shape": […]} as JSON.
"""
import json
import sys

import torch
from safetensors.torch import load_file


def main():
    loader, folder, io_path = sys.argv[1:4]
    scope = {}
    with open(loader) as f:
        exec(compile(f.read(), loader, "exec"), scope)
    model, cfg = scope["load_gyre_backbone"](folder)
    io = load_file(io_path)
    with torch.no_grad():
        y = model(io["x"])
    want = io["features"]
    print(json.dumps({
        "max_abs_diff": float((y - want).abs().max()),
        "max_abs": float(want.abs().max()),
        "shape": list(y.shape),
        "feature_dim": cfg["feature_dim"],
    }))


if __name__ == "__main__":
    main()
