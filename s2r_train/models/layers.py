"""Leaf layers shared by the generators and discriminators.

Mixed precision: normalisation runs in fp32 inside an autocast-disabled region (bf16
statistics over 256² maps are too coarse), and the result is handed back in fp32; the
next conv re-enters autocast. See training notes §2.1.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

__all__ = ["FP32Norm", "make_norm", "conv2d", "NormKind"]

NormKind = Literal["none", "instance", "batch", "sync_batch"]


class FP32Norm(nn.Module):
    """Wrap a norm layer so it always computes in fp32, whatever autocast says."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.norm(x.float())


def make_norm(kind: NormKind, num_channels: int, *, affine: bool) -> nn.Module:
    """Parameter-free (``affine=False``, SPADE) or affine norm; ``none`` → identity."""
    if kind == "none":
        return nn.Identity()
    if kind == "instance":
        return FP32Norm(nn.InstanceNorm2d(num_channels, affine=affine, track_running_stats=False))
    if kind in ("batch", "sync_batch"):
        # sync_batch is converted with nn.SyncBatchNorm.convert_sync_batchnorm under DDP
        return FP32Norm(nn.BatchNorm2d(num_channels, affine=affine))
    raise ValueError(f"unknown norm {kind!r}; use none, instance, batch or sync_batch")


def conv2d(in_ch: int, out_ch: int, kernel_size: int, *, stride: int = 1, padding: int = 0,
           bias: bool = True, spectral: bool = False, padding_mode: str = "zeros") -> nn.Module:
    conv = nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias,
                     padding_mode=padding_mode)
    if spectral:
        conv = nn.utils.parametrizations.spectral_norm(conv)
    return conv
