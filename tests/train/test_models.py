import pytest
import torch

from s2r_train.config import DiscriminatorConfig, GeneratorConfig
from s2r_train.models import (CycleGenerators, MultiscaleDiscriminator, NLayerDiscriminator, SPADEGenerator,
                              UNetGenerator, build_networks)

from .helpers import one_thread_deterministic_restored  # noqa: F401


@pytest.mark.parametrize("num_up, factor", [("normal", 32), ("more", 64), ("most", 128)])
def test_spade_upsampling_variants(num_up, factor):
    g = SPADEGenerator(8, base_filters=2, num_upsampling_layers=num_up, spade_hidden=4)
    assert g.downsample_factor == factor
    size = 2 * factor  # instance norm needs a head map of at least 2x2
    out, mu, logvar = g(torch.randn(1, 8, size, size))
    assert out.shape == (1, 3, size, size) and mu is None and logvar is None
    assert out.abs().max() <= 1
    with pytest.raises(ValueError, match="multiple of"):
        g(torch.randn(1, 8, size + 2, size))


def test_spade_is_deterministic_and_vae_is_multimodal():
    torch.manual_seed(0)
    g = SPADEGenerator(7, base_filters=2, spade_hidden=4).eval()
    x = torch.randn(2, 7, 64, 64)
    assert torch.equal(g(x)[0], g(x)[0])
    gv = SPADEGenerator(7, base_filters=2, spade_hidden=4, use_vae=True, z_dim=8).eval()
    a, b = gv(x)[0], gv(x)[0]  # z drawn from the prior
    assert not torch.allclose(a, b)
    out, mu, logvar = gv(x, torch.rand(2, 3, 64, 64) * 2 - 1)
    assert mu.shape == logvar.shape == (2, 8) and out.shape == (2, 3, 64, 64)
    # panorama-shaped input: fully convolutional even with the VAE
    assert gv(torch.randn(1, 7, 64, 128))[0].shape == (1, 3, 64, 128)


def test_spade_modulation_stays_fp32_under_bf16_autocast():
    g = SPADEGenerator(7, base_filters=2, spade_hidden=4)
    seen = []
    g.head_block.norm_0.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    g.head_block.norm_0.norm.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = g(torch.randn(1, 7, 64, 64))[0]
    assert seen == [torch.float32, torch.float32]
    assert torch.isfinite(out.float()).all()


@pytest.mark.parametrize("levels", [3, 6])
def test_unet_shapes(levels):
    g = UNetGenerator(8, base_filters=4, levels=levels, norm="batch")
    out = g(torch.randn(2, 8, 64, 64))[0]
    assert out.shape == (2, 3, 64, 64)
    assert len(g.down) == levels
    with pytest.raises(ValueError, match="multiple of"):
        g(torch.randn(2, 8, 60, 64))


@pytest.mark.parametrize("n_layers", [1, 3, 4])
def test_patchgan_returns_features_then_logits(n_layers):
    d = NLayerDiscriminator(10, base_filters=4, n_layers=n_layers, spectral_norm=True)
    feats = d(torch.randn(2, 10, 64, 64))
    assert len(feats) == n_layers + 2
    assert feats[-1].shape[1] == 1 and feats[-1].dtype == torch.float32
    # spectral norm registered as a parametrization (u, v buffers in the state dict)
    assert any("parametrizations" in k for k in d.state_dict())


def test_multiscale_discriminator():
    d = MultiscaleDiscriminator(10, num_scales=2, base_filters=4, n_layers=4)
    outs = d(torch.randn(1, 10, 64, 64))
    assert len(outs) == 2
    assert outs[1][-1].shape[-1] < outs[0][-1].shape[-1]


def test_build_networks_paired_and_cycle():
    gcfg, dcfg = GeneratorConfig(base_filters=2, spade_hidden=4), DiscriminatorConfig(base_filters=4, n_layers=2)
    G, D = build_networks(gcfg, dcfg, cond_channels=8, mode="paired")
    assert D.discriminators[0].stages[0][0].in_channels == 11
    G, D = build_networks(gcfg, dcfg, cond_channels=8, mode="cycle")
    assert isinstance(G, CycleGenerators)
    out = G(torch.randn(1, 8, 64, 64), torch.rand(1, 3, 64, 64))
    assert out["fake_cond"].shape == (1, 8, 64, 64) and out["rec_real"].shape == (1, 3, 64, 64)
    da, db = D(out["fake_cond"], out["fake_real"])
    assert len(da) == len(db) == 1


def test_unet_without_norm_builds_from_config_and_keeps_brightness():
    """norm: none (the demo recipe): no layer normalises a crop's statistics away, so a brighter
    input can give a brighter output; one level is a local render → colour map."""
    gcfg = GeneratorConfig(arch="unet", base_filters=4, unet_levels=1, norm="none")
    G, _ = build_networks(gcfg, DiscriminatorConfig(base_filters=4, n_layers=1), cond_channels=5, mode="paired")
    assert isinstance(G, UNetGenerator) and G.downsample_factor == 2
    assert not any(isinstance(m, (torch.nn.InstanceNorm2d, torch.nn.BatchNorm2d)) for m in G.modules())
    x = torch.rand(1, 5, 16, 16)
    assert G(x)[0].shape == (1, 3, 16, 16)
    assert not torch.allclose(G(x)[0], G(x + 1.0)[0])
