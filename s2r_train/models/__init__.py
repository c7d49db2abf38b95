"""Networks and their builders. Builders take explicit arguments (or one typed config
block) and return plain ``nn.Module``s; the trainer wraps them (DDP, compile)."""

from __future__ import annotations

import torch.nn as nn

from ..config import DiscriminatorConfig, GeneratorConfig
from .cycle import CycleDiscriminators, CycleGenerators
from .patchgan import MultiscaleDiscriminator, NLayerDiscriminator
from .spade import SPADE, SPADEGenerator, SPADEResBlock, StyleEncoder
from .unet import UNetGenerator
from .vgg import VGG19Features, load_vgg19_features

__all__ = [
    "build_generator", "build_discriminator", "build_networks",
    "SPADE", "SPADEResBlock", "SPADEGenerator", "StyleEncoder", "UNetGenerator",
    "NLayerDiscriminator", "MultiscaleDiscriminator", "CycleGenerators", "CycleDiscriminators",
    "VGG19Features", "load_vgg19_features",
]


def build_generator(cfg: GeneratorConfig, *, in_channels: int, out_channels: int = 3,
                    out_activation: str | None = "tanh") -> nn.Module:
    if cfg.arch == "spade":
        return SPADEGenerator(in_channels, out_channels=out_channels, base_filters=cfg.base_filters,
                              num_upsampling_layers=cfg.num_upsampling_layers, norm=cfg.norm,
                              spade_hidden=cfg.spade_hidden, spectral_norm=cfg.spectral_norm,
                              use_vae=cfg.use_vae, z_dim=cfg.z_dim, out_activation=out_activation)
    return UNetGenerator(in_channels, out_channels=out_channels, base_filters=cfg.base_filters,
                         levels=cfg.unet_levels, norm=cfg.norm, out_activation=out_activation)


def build_discriminator(cfg: DiscriminatorConfig, *, in_channels: int) -> MultiscaleDiscriminator:
    """Always a ``MultiscaleDiscriminator`` (num_scales 1 = a single PatchGAN) so every D
    returns the same nested list shape."""
    return MultiscaleDiscriminator(in_channels, num_scales=cfg.num_scales, base_filters=cfg.base_filters,
                                   n_layers=cfg.n_layers, norm=cfg.norm, spectral_norm=cfg.spectral_norm)


def build_networks(gen: GeneratorConfig, disc: DiscriminatorConfig, *, cond_channels: int,
                   mode: str) -> tuple[nn.Module, nn.Module]:
    """(G, D) for ``paired`` (D on cat(cond, image)) or ``cycle`` (containers of two each)."""
    if mode == "paired":
        return (build_generator(gen, in_channels=cond_channels),
                build_discriminator(disc, in_channels=cond_channels + 3))
    if mode == "cycle":
        g = CycleGenerators(build_generator(gen, in_channels=cond_channels),
                            build_generator(gen, in_channels=3, out_channels=cond_channels, out_activation=None))
        d = CycleDiscriminators(build_discriminator(disc, in_channels=cond_channels),
                                build_discriminator(disc, in_channels=3))
        return g, d
    raise ValueError(f"unknown mode {mode!r}; use paired or cycle")
