"""CycleGAN containers: two generators (sim→real ``ab``, real→sim ``ba``) and two
unconditional discriminators (``a`` judges sim-domain maps, ``b`` photos).

They are single modules so DDP, the optimisers and checkpoints treat them like the
paired G and D; one forward call runs everything a step needs.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["CycleGenerators", "CycleDiscriminators"]


class CycleGenerators(nn.Module):
    def __init__(self, ab: nn.Module, ba: nn.Module):
        super().__init__()
        self.ab = ab
        self.ba = ba

    def forward(self, cond: torch.Tensor, real: torch.Tensor | None = None):
        """With ``real``: dict of fake_real, fake_cond, rec_cond, rec_real; without: (fake, None, None)."""
        fake_real = self.ab(cond)[0]
        if real is None:
            return fake_real, None, None
        fake_cond = self.ba(real)[0]
        return {
            "fake_real": fake_real,
            "fake_cond": fake_cond,
            "rec_cond": self.ba(fake_real)[0],
            "rec_real": self.ab(fake_cond)[0],
        }


class CycleDiscriminators(nn.Module):
    def __init__(self, a: nn.Module, b: nn.Module):
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x_a: torch.Tensor, x_b: torch.Tensor):
        return self.a(x_a), self.b(x_b)
