"""PatchGAN discriminators: ``NLayerDiscriminator`` (pix2pix; thesis n_layers 3) and the
multi-scale ensemble of pix2pixHD/SPADE. Conditional use: feed ``cat(condition, image)``.

Each D returns its intermediate features (for feature matching) with the patch logits
last; the multi-scale D returns one such list per scale (full resolution first).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import NormKind, conv2d, make_norm

__all__ = ["NLayerDiscriminator", "MultiscaleDiscriminator"]


class NLayerDiscriminator(nn.Module):
    def __init__(self, in_channels: int, *, base_filters: int = 64, n_layers: int = 3,
                 norm: NormKind = "instance", spectral_norm: bool = False):
        super().__init__()
        pad = 2  # as SPADE: feature maps never shrink to zero at small crops
        nf = base_filters
        stages: list[nn.Module] = [nn.Sequential(conv2d(in_channels, nf, 4, stride=2, padding=pad, spectral=spectral_norm),
                                                 nn.LeakyReLU(0.2))]
        ch = nf
        for n in range(1, n_layers + 1):
            out = nf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            stages.append(nn.Sequential(
                conv2d(ch, out, 4, stride=stride, padding=pad, bias=norm == "none", spectral=spectral_norm),
                make_norm(norm, out, affine=True), nn.LeakyReLU(0.2)))
            ch = out
        stages.append(conv2d(ch, 1, 4, stride=1, padding=pad, spectral=False))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        feats[-1] = feats[-1].float()  # logits to the (fp32) losses
        return feats


class MultiscaleDiscriminator(nn.Module):
    """``num_scales`` NLayer Ds on the input average-pooled by 2 per scale."""

    def __init__(self, in_channels: int, *, num_scales: int = 2, base_filters: int = 64, n_layers: int = 4,
                 norm: NormKind = "none", spectral_norm: bool = True):
        super().__init__()
        self.discriminators = nn.ModuleList(
            NLayerDiscriminator(in_channels, base_filters=base_filters, n_layers=n_layers, norm=norm,
                                spectral_norm=spectral_norm) for _ in range(num_scales))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        outs = []
        for i, d in enumerate(self.discriminators):
            if i:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outs.append(d(x))
        return outs
