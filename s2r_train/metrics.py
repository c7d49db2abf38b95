"""Per-batch image metrics (no learned weights): L1, PSNR, SSIM, discriminator accuracy.

Images are in [−1, 1]; PSNR/SSIM are computed on [0, 1] (data range 1). All fp32.
``mask`` (B, 1, H, W) in {0, 1}, optional: only pixels where it is 1 count (the photo's valid
mask); SSIM then averages only the windows that lie wholly inside the mask.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["l1", "psnr", "ssim", "discriminator_accuracy", "image_metrics"]


def _to01(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def _masked_mean(per_pixel: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-image mean over channels and the pixels where ``mask`` is 1 → (B,)."""
    if mask is None:
        return per_pixel.flatten(1).mean(1)
    w = mask.float().expand_as(per_pixel)
    return (per_pixel * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1.0)


@torch.no_grad()
def l1(pred: torch.Tensor, target: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute error in [−1, 1] units, per image (B,)."""
    return _masked_mean((pred.float() - target.float()).abs(), mask)


@torch.no_grad()
def psnr(pred: torch.Tensor, target: torch.Tensor, *, eps: float = 1e-10,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB on [0, 1] images, per image (B,)."""
    mse = _masked_mean((_to01(pred) - _to01(target)).pow(2), mask)
    return 10 * torch.log10(1.0 / mse.clamp_min(eps))


def _gaussian_window(size: int, sigma: float, device, channels: int) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous()


@torch.no_grad()
def ssim(pred: torch.Tensor, target: torch.Tensor, *, window_size: int = 11, sigma: float = 1.5,
         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004; Gaussian 11×11, σ 1.5, K1 0.01, K2 0.03),
    on [0, 1] images, valid-window mean per image (B,). Window shrinks for tiny images."""
    x, y = _to01(pred), _to01(target)
    c = x.shape[1]
    size = min(window_size, x.shape[-1], x.shape[-2])
    win = _gaussian_window(size, sigma, x.device, c)
    c1, c2 = 0.01**2, 0.03**2

    def filt(t):
        return F.conv2d(t, win, groups=c)

    mu_x, mu_y = filt(x), filt(y)
    sxx = filt(x * x) - mu_x**2
    syy = filt(y * y) - mu_y**2
    sxy = filt(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    if mask is None:
        return s.flatten(1).mean(1)
    box = torch.ones(1, 1, size, size, device=x.device)
    inside = (F.conv2d(mask.float(), box) >= size * size - 0.5).float()  # window wholly in the mask
    return _masked_mean(s, inside)


@torch.no_grad()
def discriminator_accuracy(real_out: Sequence[Sequence[torch.Tensor]], fake_out: Sequence[Sequence[torch.Tensor]],
                           *, threshold: float = 0.0) -> tuple[float, float]:
    """Fraction of patches D classifies right: (real > thr, fake < thr), averaged over scales.
    ``threshold`` 0 for bce/hinge logits, 0.5 for least squares."""
    real_acc = torch.stack([(s[-1].float() > threshold).float().mean() for s in real_out]).mean()
    fake_acc = torch.stack([(s[-1].float() < threshold).float().mean() for s in fake_out]).mean()
    return float(real_acc), float(fake_acc)


def image_metrics(pred: torch.Tensor, target: torch.Tensor, *, mask: torch.Tensor | None = None) -> dict[str, float]:
    """Batch means of l1, psnr, ssim."""
    return {"l1": float(l1(pred, target, mask=mask).mean()), "psnr": float(psnr(pred, target, mask=mask).mean()),
            "ssim": float(ssim(pred, target, mask=mask).mean())}
