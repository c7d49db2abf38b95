"""VGG-19 feature trunk for the perceptual loss, loaded from a LOCAL weights file.

Layer indices match the usual ``features.<i>`` layout of VGG-19 state dicts, so a state
dict exported elsewhere (keys ``features.0.weight`` …, or without the ``features.``
prefix) loads directly. Nothing is downloaded: no file, no perceptual loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["VGG19Features", "load_vgg19_features", "VGG19_CFG", "PERCEPTUAL_LAYERS"]

VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
# relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 → index of the ReLU in ``features``
PERCEPTUAL_LAYERS = (1, 6, 11, 20, 29)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """Image in [−1, 1] → list of ReLU features at ``PERCEPTUAL_LAYERS``; frozen, fp32."""

    def __init__(self, width_divisor: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = max(1, v // width_divisor)
                layers += [nn.Conv2d(in_ch, out, 3, padding=1), nn.ReLU(inplace=False)]
                in_ch = out
        self.features = nn.Sequential(*layers[: PERCEPTUAL_LAYERS[-1] + 1])
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always frozen, always eval
        return super().train(False)

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        with torch.autocast(device_type=image.device.type, enabled=False):
            x = ((image.float() + 1) / 2 - self.mean) / self.std
            out = []
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i in PERCEPTUAL_LAYERS:
                    out.append(x)
            return out


def load_vgg19_features(path: str | Path, *, width_divisor: int = 1) -> VGG19Features:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"perceptual weights {path} not found; put a VGG-19 state_dict (.pt) there "
            "(nothing is downloaded) or set train.lambda_vgg: 0")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    net = VGG19Features(width_divisor=width_divisor)
    own = net.features.state_dict()
    picked = {}
    for k, v in state.items():
        key = k[len("features."):] if k.startswith("features.") else k
        if key in own:
            picked[key] = v
    missing = sorted(set(own) - set(picked))
    if missing:
        raise ValueError(f"{path}: not a VGG-19 features state dict; missing {missing[:4]}…")
    net.features.load_state_dict(picked)
    return net
