import math

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
