"""U-net generator (pix2pix ``unet_256`` shape): ``levels`` stride-2 4×4 convs down, transposed
convs up, skip connections by concatenation. Thesis: 128 filters, 7–8 levels, batch norm.
Input height/width must be multiples of 2**levels.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import NormKind, make_norm

__all__ = ["UNetGenerator"]


class UNetGenerator(nn.Module):
    """Condition (B, C, H, W) → image (B, out, H, W); forward returns ``(image, None, None)``."""

    def __init__(self, cond_channels: int, *, out_channels: int = 3, base_filters: int = 64, levels: int = 8,
                 norm: NormKind = "batch", dropout: float = 0.0, out_activation: str | None = "tanh"):
        super().__init__()
        self.levels = levels
        widths = [min(base_filters * 2**i, base_filters * 8) for i in range(levels)]
        self.down = nn.ModuleList()
        self.down_norm = nn.ModuleList()
        in_ch = cond_channels
        for i, w in enumerate(widths):
            self.down.append(nn.Conv2d(in_ch, w, 4, stride=2, padding=1, bias=False))
            inner_or_outer = i == 0 or i == levels - 1
            self.down_norm.append(nn.Identity() if inner_or_outer else make_norm(norm, w, affine=True))
            in_ch = w
        self.up = nn.ModuleList()
        self.up_norm = nn.ModuleList()
        for i in reversed(range(levels)):
            up_in = widths[i] if i == levels - 1 else 2 * widths[i]
            up_out = out_channels if i == 0 else widths[i - 1]
            self.up.append(nn.ConvTranspose2d(up_in, up_out, 4, stride=2, padding=1, bias=i == 0))
            self.up_norm.append(nn.Identity() if i == 0 else make_norm(norm, up_out, affine=True))
        self.dropout = dropout
        self.out_activation = out_activation

    @property
    def downsample_factor(self) -> int:
        return 2**self.levels

    def forward(self, cond: torch.Tensor, style_image: torch.Tensor | None = None, z: torch.Tensor | None = None):
        h, w = cond.shape[-2:]
        f = self.downsample_factor
        if h % f or w % f:
            raise ValueError(f"U-net input {h}x{w} must be a multiple of {f} (2**levels); pad or crop it")
        skips = []
        x = cond
        for i, (conv, norm) in enumerate(zip(self.down, self.down_norm)):
            x = norm(conv(x if i == 0 else F.leaky_relu(x, 0.2)))
            skips.append(x)
        for j, (conv, norm) in enumerate(zip(self.up, self.up_norm)):
            if j > 0:
                x = torch.cat([x, skips[self.levels - 1 - j]], 1)
            x = norm(conv(F.relu(x)))
            if self.dropout and j < 3 and j < self.levels - 1:
                x = F.dropout(x, self.dropout, self.training)
        if self.out_activation == "tanh":
            x = torch.tanh(x)
        return x, None, None
