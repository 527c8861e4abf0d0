"""Makes tests/fixtures/vit_tiny_timm.safetensors: a tiny timm VisionTransformer (8-px inputs,
patch 4, 1 channel, width 16, 2 blocks, 2 heads, class token, no classifier) with every tensor
perturbed off timm's init, a fixed input, timm's `forward_features` of it, and its position
embeddings resampled from the 2×2 to a 3×3 grid by `F.interpolate(mode="bicubic",
align_corners=False, antialias=False)`. Run once, in a venv with torch and timm (timm 1.0.31,
torch 2.15.0 made the committed file):

    python crates/gyre-encoders/tests/vit_timm_fixture.py
"""
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

torch.manual_seed(0)
m = VisionTransformer(img_size=8, patch_size=4, in_chans=1, num_classes=0, embed_dim=16,
                      depth=2, num_heads=2, mlp_ratio=4.0, qkv_bias=True, global_pool="token")
with torch.no_grad():
    for p in m.parameters():
        p.add_(0.1 * torch.randn_like(p))
m.eval()
x = torch.randn(2, 1, 8, 8)
with torch.no_grad():
    tokens = m.forward_features(x)
    pos = m.pos_embed
    grid = pos[:, 1:].reshape(1, 2, 2, 16).permute(0, 3, 1, 2)
    up = F.interpolate(grid, size=(3, 3), mode="bicubic", align_corners=False, antialias=False)
    up = torch.cat([pos[:, :1], up.permute(0, 2, 3, 1).reshape(1, 9, 16)], 1)
out = {f"model.{k}": v.contiguous() for k, v in m.state_dict().items()}
out.update({"input": x, "tokens": tokens.contiguous(), "pos_3x3": up.contiguous()})
here = os.path.dirname(os.path.abspath(__file__))
save_file(out, os.path.join(here, "fixtures", "vit_tiny_timm.safetensors"),
          metadata={"timm": __import__("timm").__version__, "torch": torch.__version__})
print(sorted(k for k in out if k.startswith("model.")))
