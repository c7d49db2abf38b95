import math

import pytest
import torch

from s2r_train.losses import (PerceptualLoss, d_adversarial_loss, feature_matching_loss, g_adversarial_loss, kl_loss,
                              weighted_l1_loss, weighted_l2_loss)
from s2r_train.models import VGG19Features, load_vgg19_features

from .helpers import one_thread_deterministic_restored  # noqa: F401


def _d(value: float, feats: float = 0.0):
    """A one-scale D output: one feature map, then logits filled with ``value``."""
    return [[torch.full((2, 4, 3, 3), feats), torch.full((2, 1, 3, 3), value)]]


def test_bce_hinge_ls_known_values():
    real, fake = _d(2.0), _d(-1.0)
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    assert d_adversarial_loss(real, fake, "bce").item() == pytest.approx(sp(-2.0) + sp(-1.0), rel=1e-6)
    assert d_adversarial_loss(real, fake, "hinge").item() == pytest.approx(0.0)  # both beyond the margin
    assert d_adversarial_loss(_d(0.5), _d(0.5), "hinge").item() == pytest.approx(0.5 + 1.5)
    assert d_adversarial_loss(real, fake, "ls").item() == pytest.approx(0.5 * 1 + 0.5 * 1)
    assert g_adversarial_loss(fake, "bce").item() == pytest.approx(sp(1.0), rel=1e-6)
    assert g_adversarial_loss(fake, "hinge").item() == pytest.approx(1.0)
    assert g_adversarial_loss(fake, "ls").item() == pytest.approx(0.5 * 4)
    with pytest.raises(ValueError, match="unknown gan loss"):
        g_adversarial_loss(fake, "wgan")


def test_losses_are_fp32_under_autocast():
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = torch.randn(2, 3, 8, 8).bfloat16()
        assert weighted_l1_loss(a, torch.zeros_like(a)).dtype == torch.float32
        assert d_adversarial_loss(_d(1.0), _d(0.0), "bce").dtype == torch.float32


def test_feature_matching_ignores_logits_and_real_grads():
    fake = [[torch.ones(1, 2, 2, 2, requires_grad=True), torch.full((1, 1, 2, 2), 5.0)]]
    real = [[torch.zeros(1, 2, 2, 2, requires_grad=True), torch.zeros(1, 1, 2, 2)]]
    loss = feature_matching_loss(fake, real)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert real[0][0].grad is None and fake[0][0].grad is not None


def test_weighted_l1_by_alignment_score():
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.stack([torch.ones(3, 4, 4), 3 * torch.ones(3, 4, 4)])
    assert weighted_l1_loss(pred, target).item() == pytest.approx(2.0)
    assert weighted_l1_loss(pred, target, torch.tensor([1.0, 0.0])).item() == pytest.approx(1.0)
    assert weighted_l1_loss(pred, target, torch.tensor([1.0, 1.0])).item() == pytest.approx(2.0)


def test_weighted_l2_is_the_squared_error_weighted_and_masked_like_l1():
    pred = torch.zeros(2, 3, 4, 4)
    target = torch.stack([torch.ones(3, 4, 4), 3 * torch.ones(3, 4, 4)])
    assert weighted_l2_loss(pred, target).item() == pytest.approx((1 + 9) / 2)
    assert weighted_l2_loss(pred, target, torch.tensor([0.0, 1.0])).item() == pytest.approx(9.0)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    target[:, :, 2:] = 100.0  # masked-out pixels do not count
    assert weighted_l2_loss(pred, target, mask=mask).item() == pytest.approx(5.0)
    # the minimiser over a constant prediction is the mean (L1's: the median)
    x = torch.tensor([0.0, 0.0, 3.0]).view(3, 1, 1, 1)
    c = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([c], lr=0.1)
    for _ in range(200):
        opt.zero_grad()
        weighted_l2_loss(c.view(1, 1, 1, 1).expand_as(x), x).backward()
        opt.step()
    assert c.item() == pytest.approx(1.0, abs=1e-3)


def test_kl_zero_at_prior():
    assert kl_loss(torch.zeros(3, 5), torch.zeros(3, 5)).item() == pytest.approx(0.0)
    assert kl_loss(torch.ones(3, 5), torch.zeros(3, 5)).item() == pytest.approx(2.5)


def test_perceptual_loss_from_a_local_weights_file(tmp_path):
    torch.manual_seed(0)
    made = VGG19Features(width_divisor=8)
    path = tmp_path / "vgg19_made_here.pt"
    torch.save({f"features.{k}": v for k, v in made.features.state_dict().items()}, path)
    loaded = load_vgg19_features(path, width_divisor=8)
    for a, b in zip(made.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    loss_fn = PerceptualLoss(loaded)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    assert loss_fn(x, x.detach()).item() == pytest.approx(0.0, abs=1e-7)
    y = torch.rand(1, 3, 32, 32)
    loss = loss_fn(x, y)
    assert loss.item() > 0
    loss.backward()
    assert x.grad is not None and all(p.grad is None for p in loaded.parameters())
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_vgg19_features(tmp_path / "missing.pt")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a VGG-19"):
        load_vgg19_features(tmp_path / "bad.pt")
