import math

import numpy as np
import pytest
import torch

from s2r_train.metrics import discriminator_accuracy, image_metrics, l1, psnr, ssim

from .helpers import one_thread_deterministic_restored  # noqa: F401


def test_psnr_known_value():
    a = torch.zeros(1, 3, 16, 16)  # 0.5 in [0, 1]
    b = a + 0.2  # 0.6 in [0, 1]: mse 0.01 → 20 dB
    assert psnr(a, b).item() == pytest.approx(20.0, abs=1e-3)
    assert l1(a, b).item() == pytest.approx(0.2, abs=1e-6)


def test_ssim_identity_and_degradation():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    s_small = ssim(x, (x + 0.05 * torch.randn_like(x)).clamp(-1, 1))
    s_big = ssim(x, (x + 0.5 * torch.randn_like(x)).clamp(-1, 1))
    assert (s_big < s_small).all() and (s_small < 1).all()
    m = image_metrics(x, x)
    assert m["l1"] == 0 and math.isinf(m["psnr"]) is False and m["ssim"] == pytest.approx(1.0, abs=1e-5)


def test_discriminator_accuracy():
    real = [[torch.tensor([[1.0, -1.0, 2.0, 3.0]])]]
    fake = [[torch.tensor([[-1.0, -2.0, 1.0, -3.0]])]]
    assert discriminator_accuracy(real, fake) == (0.75, 0.75)
    assert discriminator_accuracy(real, fake, threshold=2.5) == (0.25, 1.0)


def _ssim_reference(x01: np.ndarray, y01: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. 2004 written out window by window (no convolution): per channel, every
    window position inside the image, Gaussian-weighted means, variances and covariance."""
    c1, c2 = 0.01**2, 0.03**2
    ax = np.arange(win) - (win - 1) / 2
    g = np.exp(-(ax**2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    vals = []
    for c in range(x01.shape[0]):
        for i in range(x01.shape[1] - win + 1):
            for j in range(x01.shape[2] - win + 1):
                a, b = x01[c, i:i + win, j:j + win], y01[c, i:i + win, j:j + win]
                ma, mb = (w * a).sum(), (w * b).sum()
                va, vb = (w * a * a).sum() - ma**2, (w * b * b).sum() - mb**2
                cov = (w * a * b).sum() - ma * mb
                vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


def test_metrics_agree_with_independent_implementations():
    """L1, PSNR (OpenCV's cv2.PSNR) and SSIM (window-by-window reference) on fixed tensors."""
    import cv2

    g = torch.Generator().manual_seed(7)
    x = torch.rand(2, 3, 24, 20, generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(2, 3, 24, 20, generator=g)).clamp(-1, 1)
    x01, y01 = ((x + 1) / 2).double().numpy(), ((y + 1) / 2).double().numpy()
    for b in range(2):
        assert l1(x, y)[b].item() == pytest.approx(np.abs(x[b].numpy() - y[b].numpy()).mean(), rel=1e-5)
        want = cv2.PSNR(x01[b].transpose(1, 2, 0).copy(), y01[b].transpose(1, 2, 0).copy(), 1.0)
        assert psnr(x, y)[b].item() == pytest.approx(want, abs=1e-3)
        assert ssim(x, y)[b].item() == pytest.approx(_ssim_reference(x01[b], y01[b]), abs=1e-4)


def test_masked_metrics_count_only_valid_pixels():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 32, 32, generator=g) * 2 - 1
    y = x.clone()
    y[..., 20:, :] = -x[..., 20:, :]  # rows 20+ badly wrong …
    mask = torch.ones(1, 1, 32, 32)
    mask[..., 20:, :] = 0  # … and masked out
    assert l1(x, y, mask=mask).item() == 0.0 and l1(x, y).item() > 0.1
    assert psnr(x, y, mask=mask).item() == pytest.approx(100.0) and psnr(x, y).item() < 20
    assert ssim(x, y, mask=mask).item() == pytest.approx(1.0, abs=1e-6) and ssim(x, y).item() < 0.9
    half = mask.clone()
    half[..., :10, :] = 0  # a partly masked image: the mean over the rows that count
    expect = (x - y).abs()[..., 10:20, :].mean().item()
    assert l1(x, y, mask=half).item() == pytest.approx(expect, rel=1e-6)
