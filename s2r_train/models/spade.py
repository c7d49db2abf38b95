"""SPADE generator (Park et al. 2019), conditioned on the continuous sim passes.

Ported layer by layer with explicit arguments (no option namespace): ``SPADE`` modulates a
parameter-free normalisation with per-pixel γ, β predicted from the condition map;
``SPADEResBlock`` stacks two of them; ``SPADEGenerator`` starts from the condition
downsampled by 2**n_up and upsamples n_up times (normal/more/most = 5/6/7).

Deterministic by default. With ``use_vae`` a ``StyleEncoder`` maps the target photo to
(μ, log σ²); z is broadcast over the head feature map, so the net stays fully
convolutional (any input size that is a multiple of 2**n_up).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import NormKind, conv2d, make_norm

__all__ = ["SPADE", "SPADEResBlock", "SPADEGenerator", "StyleEncoder", "NUM_UPSAMPLING"]

NUM_UPSAMPLING = {"normal": 5, "more": 6, "most": 7}


class SPADE(nn.Module):
    """x ↦ norm(x)·(1 + γ(cond)) + β(cond); norm and modulation in fp32."""

    def __init__(self, num_channels: int, cond_channels: int, *, norm: NormKind = "instance", hidden: int = 128):
        super().__init__()
        self.norm = make_norm(norm, num_channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(cond_channels, hidden, 3, padding=1), nn.ReLU())
        self.to_gamma = nn.Conv2d(hidden, num_channels, 3, padding=1)
        self.to_beta = nn.Conv2d(hidden, num_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # cond is already at x's resolution (the generator keeps a pyramid)
        h = self.shared(cond)
        gamma, beta = self.to_gamma(h), self.to_beta(h)
        normed = self.norm(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return normed.float() * (1 + gamma.float()) + beta.float()


class SPADEResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cond_channels: int, *, norm: NormKind, hidden: int, spectral: bool):
        super().__init__()
        mid = min(in_ch, out_ch)
        self.norm_0 = SPADE(in_ch, cond_channels, norm=norm, hidden=hidden)
        self.conv_0 = conv2d(in_ch, mid, 3, padding=1, spectral=spectral)
        self.norm_1 = SPADE(mid, cond_channels, norm=norm, hidden=hidden)
        self.conv_1 = conv2d(mid, out_ch, 3, padding=1, spectral=spectral)
        self.learned_shortcut = in_ch != out_ch
        if self.learned_shortcut:
            self.norm_s = SPADE(in_ch, cond_channels, norm=norm, hidden=hidden)
            self.conv_s = conv2d(in_ch, out_ch, 1, bias=False, spectral=spectral)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = self.conv_s(self.norm_s(x, cond)) if self.learned_shortcut else x
        h = self.conv_0(F.leaky_relu(self.norm_0(x, cond), 0.2))
        h = self.conv_1(F.leaky_relu(self.norm_1(h, cond), 0.2))
        return skip + h


class StyleEncoder(nn.Module):
    """Photo → (μ, log σ²) of the style code z (SPADE's VAE encoder, size-agnostic)."""

    def __init__(self, z_dim: int, *, base_filters: int = 64, spectral: bool = True, in_channels: int = 3):
        super().__init__()
        nf = base_filters
        chans = [in_channels, nf, 2 * nf, 4 * nf, 8 * nf, 8 * nf]
        layers: list[nn.Module] = []
        for i in range(len(chans) - 1):
            layers += [conv2d(chans[i], chans[i + 1], 3, stride=2, padding=1, spectral=spectral),
                       make_norm("instance", chans[i + 1], affine=False) if i else nn.Identity(),
                       nn.LeakyReLU(0.2)]
        self.body = nn.Sequential(*layers)
        self.fc_mu = nn.Linear(chans[-1] * 16, z_dim)
        self.fc_logvar = nn.Linear(chans[-1] * 16, z_dim)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.adaptive_avg_pool2d(self.body(image), 4).flatten(1)
        return self.fc_mu(h).float(), self.fc_logvar(h).float()


class SPADEGenerator(nn.Module):
    """Condition (B, C, H, W) → RGB (B, 3, H, W) in [−1, 1] (or raw with ``out_activation=None``).

    forward returns ``(image, mu, logvar)``; ``mu``/``logvar`` are None without the VAE.
    """

    def __init__(self, cond_channels: int, *, out_channels: int = 3, base_filters: int = 64,
                 num_upsampling_layers: str = "normal", norm: NormKind = "instance", spade_hidden: int = 128,
                 spectral_norm: bool = True, use_vae: bool = False, z_dim: int = 256,
                 out_activation: str | None = "tanh"):
        super().__init__()
        if num_upsampling_layers not in NUM_UPSAMPLING:
            raise ValueError(f"num_upsampling_layers must be one of {list(NUM_UPSAMPLING)}, got {num_upsampling_layers!r}")
        self.n_up = NUM_UPSAMPLING[num_upsampling_layers]
        nf = base_filters
        # channel multipliers per stage: head, then one block after each upsampling
        mults = [16.0] * (self.n_up - 4) + [8.0, 4.0, 2.0, 1.0]
        if num_upsampling_layers == "most":
            mults = [16.0] * 2 + [8.0, 4.0, 2.0, 1.0, 0.5]
        chans = [16 * nf] + [max(1, int(m * nf)) for m in mults]
        assert len(chans) == self.n_up + 1
        self.use_vae = use_vae
        self.z_dim = z_dim
        head_in = cond_channels + (z_dim if use_vae else 0)
        self.head = conv2d(head_in, chans[0], 3, padding=1, spectral=spectral_norm)
        self.head_block = SPADEResBlock(chans[0], chans[0], cond_channels, norm=norm, hidden=spade_hidden, spectral=spectral_norm)
        self.blocks = nn.ModuleList(
            SPADEResBlock(chans[i], chans[i + 1], cond_channels, norm=norm, hidden=spade_hidden, spectral=spectral_norm)
            for i in range(self.n_up))
        self.to_rgb = nn.Conv2d(chans[-1], out_channels, 3, padding=1)
        self.out_activation = out_activation
        self.encoder = StyleEncoder(z_dim, base_filters=nf, spectral=spectral_norm) if use_vae else None

    @property
    def downsample_factor(self) -> int:
        return 2**self.n_up

    def forward(self, cond: torch.Tensor, style_image: torch.Tensor | None = None, z: torch.Tensor | None = None):
        b, _, h, w = cond.shape
        f = self.downsample_factor
        if h % f or w % f:
            raise ValueError(f"SPADE input {h}x{w} must be a multiple of {f} (2**{self.n_up}); pad or crop it")
        # condition pyramid: area-downsampled once per resolution
        pyramid = [cond]
        for _ in range(self.n_up):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        mu = logvar = None
        x = pyramid[-1]
        if self.use_vae:
            if z is None:
                if style_image is not None:
                    mu, logvar = self.encoder(style_image)
                    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                else:
                    z = torch.randn(b, self.z_dim, device=cond.device)
            x = torch.cat([x, z[:, :, None, None].to(x.dtype).expand(-1, -1, x.shape[2], x.shape[3])], 1)
        x = self.head_block(self.head(x), pyramid[-1])
        for i, block in enumerate(self.blocks):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = block(x, pyramid[self.n_up - 1 - i])
        x = self.to_rgb(F.leaky_relu(x, 0.2))
        if self.out_activation == "tanh":
            x = torch.tanh(x)
        return x, mu, logvar
