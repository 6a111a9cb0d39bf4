"""Modules that return a network's named layers (taps) for a uint8 image batch."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from engine.nets.networks import (
    Preprocess,
    WeightSource,
    load_mobilenet_v2_features,
    load_vgg16_features,
)


class MobileNetV2Taps(nn.Module):
    """MobileNetV2 returning {"gap": (N, 1280)}."""

    def __init__(self, source: WeightSource):
        super().__init__()
        self.preprocess = Preprocess(source.preprocessing)
        self.features = load_mobilenet_v2_features(source)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"gap": self.features(self.preprocess(x)).mean(dim=(2, 3))}


# Index of the max-pool that ends conv block 4 in torchvision's VGG16 ``features``.
VGG16_POOL4 = 23


def compact_map(conv: torch.Tensor) -> torch.Tensor:
    """Return a conv map as a fashion head reads it: average-pooled to 7 x 7 only when larger."""
    return F.adaptive_avg_pool2d(conv, (7, 7)) if max(conv.shape[-2:]) > 7 else conv


class VGG16Taps(nn.Module):
    """VGG16 returning the requested taps: pool5, fc6, fc7 (post-ReLU), and two conv maps.

    ``conv`` is the last conv block's map after its max-pool (pool5), ``conv4`` the fourth
    block's (pool4); each is average-pooled to 7 x 7 only when it is larger than that (the
    compact input of a fashion head, see ``engine.nets.train``). The fifth block runs only when
    a tap needs it.
    """

    def __init__(self, source: WeightSource, layers, *, fc: tuple[nn.Module, nn.Module] | None):
        super().__init__()
        self.layers = tuple(layers)
        self.preprocess = Preprocess(source.preprocessing)
        self.features = load_vgg16_features(source)
        self.fc6, self.fc7 = fc if fc is not None else (None, None)
        if {"fc6", "fc7"} & set(self.layers) and self.fc6 is None:
            raise ValueError("fc6/fc7 requested without fc weights")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        x = self.features[:VGG16_POOL4 + 1](self.preprocess(x))
        if "conv4" in self.layers:
            out["conv4"] = compact_map(x)
        if not set(self.layers) - {"conv4"}:
            return out
        conv = self.features[VGG16_POOL4 + 1:](x)
        if "conv" in self.layers:
            # The map fc6 reads, in its compact form: g x g when g <= 7 (engine.nets.train).
            out["conv"] = compact_map(conv)
        if "pool5" in self.layers:
            out["pool5"] = conv.float().mean(dim=(2, 3))
        if self.fc6 is not None and {"fc6", "fc7"} & set(self.layers):
            fc6 = F.relu(self.fc6(F.adaptive_avg_pool2d(conv, (7, 7)).flatten(1)))
            out["fc6"] = fc6
            if "fc7" in self.layers:
                out["fc7"] = F.relu(self.fc7(fc6))
        return out
