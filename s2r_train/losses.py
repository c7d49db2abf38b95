"""GAN and reconstruction losses: pure functions of tensors, computed in fp32 outside autocast.

Discriminator outputs are nested lists ``[scale][layer]`` (logits last), as returned by
``MultiscaleDiscriminator``. Adversarial losses average over scales.
"""

from __future__ import annotations

import contextlib
from typing import Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "GanLoss", "d_adversarial_loss", "g_adversarial_loss", "feature_matching_loss",
    "weighted_l1_loss", "weighted_l2_loss", "kl_loss", "PerceptualLoss", "fp32",
]

GanLoss = Literal["bce", "hinge", "ls"]
DOutput = Sequence[Sequence[torch.Tensor]]


@contextlib.contextmanager
def fp32():
    """Autocast off on every device type in use: losses are fp32 islands."""
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield


def _logits(d_out: DOutput) -> list[torch.Tensor]:
    return [scale[-1].float() for scale in d_out]


def d_adversarial_loss(real_out: DOutput, fake_out: DOutput, mode: GanLoss) -> torch.Tensor:
    """Discriminator loss, real → 1 / fake → 0 (bce, ls) or margins ±1 (hinge)."""
    with fp32():
        losses = []
        for r, f in zip(_logits(real_out), _logits(fake_out)):
            if mode == "bce":  # BCE-with-logits: log(1+e^-r) + log(1+e^f)
                losses.append(F.softplus(-r).mean() + F.softplus(f).mean())
            elif mode == "hinge":
                losses.append(F.relu(1 - r).mean() + F.relu(1 + f).mean())
            elif mode == "ls":
                losses.append(0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean())
            else:
                raise ValueError(f"unknown gan loss {mode!r}; use bce, hinge or ls")
        return torch.stack(losses).mean()


def g_adversarial_loss(fake_out: DOutput, mode: GanLoss) -> torch.Tensor:
    with fp32():
        losses = []
        for f in _logits(fake_out):
            if mode == "bce":
                losses.append(F.softplus(-f).mean())
            elif mode == "hinge":
                losses.append(-f.mean())
            elif mode == "ls":
                losses.append(0.5 * ((f - 1) ** 2).mean())
            else:
                raise ValueError(f"unknown gan loss {mode!r}; use bce, hinge or ls")
        return torch.stack(losses).mean()


def feature_matching_loss(fake_out: DOutput, real_out: DOutput) -> torch.Tensor:
    """L1 between D features of fake and (detached) real, all layers but the logits,
    summed over layers and averaged over scales (pix2pixHD)."""
    with fp32():
        total = 0.0
        for f_scale, r_scale in zip(fake_out, real_out):
            for f, r in zip(f_scale[:-1], r_scale[:-1]):
                total = total + F.l1_loss(f.float(), r.detach().float())
        return torch.as_tensor(total, dtype=torch.float32) / max(len(fake_out), 1)


def weighted_l1_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                     *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean |pred − target|; ``weight`` (B,) scales each pair (e.g. an alignment score in [0, 1]);
    ``mask`` (B,1,h,w) in [0, 1] restricts the mean to valid photo pixels."""
    return _weighted_mean_error(pred, target, weight, mask, squared=False)


def weighted_l2_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                     *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean (pred − target)², weighted and masked as :func:`weighted_l1_loss`. Its minimiser is the
    conditional *mean* (L1's is the median): what PSNR rewards where the render cannot say what is
    there (unmodelled trees, vehicles)."""
    return _weighted_mean_error(pred, target, weight, mask, squared=True)


def _weighted_mean_error(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                         mask: torch.Tensor | None, *, squared: bool) -> torch.Tensor:
    with fp32():
        diff = pred.float() - target.float()
        err = diff.square() if squared else diff.abs()
        if mask is None:
            per_sample = err.flatten(1).mean(1)
        else:
            m = mask.float().expand_as(err)
            per_sample = (err * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)
        if weight is None:
            return per_sample.mean()
        w = weight.float().to(per_sample.device)
        return (per_sample * w).sum() / w.sum().clamp_min(1e-8)


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, 1)), summed over z, averaged over the batch."""
    with fp32():
        mu, logvar = mu.float(), logvar.float()
        return (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)).mean()


class PerceptualLoss(nn.Module):
    """Σ_l w_l · L1(VGG_l(pred), VGG_l(target)), layers relu1_1…relu5_1, w = 1/32 … 1."""

    def __init__(self, features: nn.Module, weights: Sequence[float] = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)):
        super().__init__()
        self.features = features
        self.weights = tuple(weights)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with fp32():
            fp = self.features(pred.float())
            with torch.no_grad():
                ft = self.features(target.float())
            return sum(w * F.l1_loss(a, b) for w, a, b in zip(self.weights, fp, ft))
