#!/usr/bin/env python3
"""The Python side of the torchvision interoperability test (tests/torchvision_interop.rs), with
numpy and safetensors only (no torch).

  write OUT.safetensors   a ResNet-18 state dict with torchvision's exact key names, shapes and
                          dtypes (fc included, num_batches_tracked int64), seeded random values;
                          prints {"key": sum} as JSON
  check IN.safetensors    reads a gyre export, checks it is exactly torchvision's ResNet-18 state
                          dict without fc (names, shapes, dtypes); prints {"key": sum} as JSON
"""
import json
import sys

import numpy as np
from safetensors.numpy import load_file, save_file


def resnet18_spec():
    """(name, shape, dtype) of torchvision.models.resnet18().state_dict(), in order."""
    spec = [("conv1.weight", (64, 3, 7, 7), np.float32)]

    def bn(prefix, c):
        return [
            (f"{prefix}.weight", (c,), np.float32),
            (f"{prefix}.bias", (c,), np.float32),
            (f"{prefix}.running_mean", (c,), np.float32),
            (f"{prefix}.running_var", (c,), np.float32),
            (f"{prefix}.num_batches_tracked", (), np.int64),
        ]

    spec += bn("bn1", 64)
    c_in = 64
    for stage, width in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            p = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            spec.append((f"{p}.conv1.weight", (width, c_in, 3, 3), np.float32))
            spec += bn(f"{p}.bn1", width)
            spec.append((f"{p}.conv2.weight", (width, width, 3, 3), np.float32))
            spec += bn(f"{p}.bn2", width)
            if stride != 1 or c_in != width:
                spec.append((f"{p}.downsample.0.weight", (width, c_in, 1, 1), np.float32))
                spec += bn(f"{p}.downsample.1", width)
            c_in = width
    spec += [("fc.weight", (1000, 512), np.float32), ("fc.bias", (1000,), np.float32)]
    return spec


def sums(tensors):
    return {k: float(np.asarray(v, dtype=np.float64).sum()) for k, v in tensors.items()}


def main():
    mode, path = sys.argv[1], sys.argv[2]
    spec = resnet18_spec()
    if mode == "write":
        rng = np.random.default_rng(7)
        tensors = {}
        for name, shape, dtype in spec:
            if dtype == np.int64:
                tensors[name] = np.array(123, dtype=np.int64).reshape(shape)
            else:
                tensors[name] = rng.standard_normal(shape).astype(np.float32)
        save_file(tensors, path)
        print(json.dumps(sums(tensors)))
    elif mode == "check":
        got = load_file(path)
        want = {n: (s, d) for n, s, d in spec if not n.startswith("fc.")}
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        assert not missing and not extra, f"missing {missing[:3]}, extra {extra[:3]}"
        for name, (shape, dtype) in want.items():
            t = got[name]
            assert t.shape == shape, f"{name}: shape {t.shape}, torchvision {shape}"
            assert t.dtype == dtype, f"{name}: dtype {t.dtype}, torchvision {np.dtype(dtype)}"
        print(json.dumps(sums(got)))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
