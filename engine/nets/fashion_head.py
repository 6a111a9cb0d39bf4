"""vgg16-fashion's head: the new fc6/fc7 and softmax over a frozen VGG16 conv map.

Small inputs, exactly. VGG16's fc6 reads a 512-channel map average-pooled to 7x7 (25088
values). Below 224 px (pool5) or 112 px (pool4) the map is g x g with g < 7 (pool4: 4 x 4
at 64 px), and the 7x7 adaptive average pool is a fixed linear map ``A`` of full column
rank (every 7x7 cell copies or averages g x g cells). So ``fc6(A x) = (W A) x``: training a
compact fc6 on the 512*g*g values of the map is the same model, 3x to 12x cheaper.
``FashionHead.full_fc6`` turns it back into a genuine 25088 -> 4096 layer (standardisation
folded in), ``W = W' pinv(A)``, which gives the same outputs on ``A x`` (tested). The
checkpoint stores the compact layer plus the grid size; from 224 px up the compact layer
*is* the 25088-input layer.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from engine.nets import DEFAULT_FASHION_INPUT, FASHION_INPUTS, TRUNK_TAPS

CHECKPOINT_NAME = "vgg16-fashion.pt"
# 2 added "power" (format 1 loads with power None); 3 added "input" and the standardisation
# buffers (formats 1 and 2 load reading pool5, unstandardised).
CHECKPOINT_FORMAT = 3
POWERS = (None, "sqrt")
INPUTS = FASHION_INPUTS
DEFAULT_INPUT = DEFAULT_FASHION_INPUT
# The VGG16Taps tap that carries each input map.


def pool5_grid(conv_dim: int) -> int:
    """Return g for a flattened compact map (pool4 or pool5) of 512*g*g values."""
    grid = math.isqrt(conv_dim // 512)
    if grid < 1 or 512 * grid * grid != conv_dim or grid > 7:
        raise ValueError(f"conv features must have 512*g*g columns with 1 <= g <= 7, "
                         f"got {conv_dim}")
    return grid


def adaptive_pool_matrix(grid: int) -> torch.Tensor:
    """Return the (49, g*g) matrix of adaptive_avg_pool2d from a g x g map to 7 x 7."""
    basis = torch.eye(grid * grid, dtype=torch.float64).view(grid * grid, 1, grid, grid)
    return F.adaptive_avg_pool2d(basis, (7, 7)).view(grid * grid, 49).T


class FashionHead(nn.Module):
    """[sqrt] -> [standardise] -> fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> linear.

    ``input`` names the conv map fc6 reads (``pool4`` or ``pool5``). ``power="sqrt"`` reads
    it through an element-wise square root (power normalisation): ReLU conv activations
    are sparse and heavy-tailed (87% zeros, a few in the hundreds on Caffe-scaled input),
    and the square root evens them out so fc6 learns from all of them. It lifted the
    pool5 head's variants by 2 to 5 points of top-1 (docs/benchmarks.md). With
    ``standardize`` each value is then centred and scaled by the buffers ``mean`` and
    ``scale`` (``set_standardization``, from the training rows).
    """

    def __init__(self, n_classes: int, grid: int = 7, dropout: float = 0.5,
                 power: str | None = "sqrt", input: str = "pool5", standardize: bool = False):
        super().__init__()
        if power not in POWERS:
            raise ValueError(f"unknown power normalisation {power!r}; accepted: none, sqrt")
        if input not in INPUTS:
            raise ValueError(f"unknown fc6 input {input!r}; accepted: {', '.join(INPUTS)}")
        self.grid = grid
        self.power = power
        self.input = input
        self.standardize = bool(standardize)
        dim = 512 * grid * grid
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.fc6 = nn.Linear(dim, 4096)
        self.fc7 = nn.Linear(4096, 4096)
        self.classifier = nn.Linear(4096, n_classes)
        self.dropout = nn.Dropout(dropout)
        self._full_fc6: nn.Linear | None = None

    @property
    def trunk_tap(self) -> str:
        """The VGG16Taps tap this head reads."""
        return TRUNK_TAPS[self.input]

    @torch.no_grad()
    def set_standardization(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Standardise fc6's input with these per-value statistics (of the power-normed map).

        The scale is 1 / (std + eps) with eps 0.2% of the mean std, so values that never vary
        (dead units) stay at zero instead of blowing up.
        """
        std = std.to(self.scale)
        eps = 2e-3 * float(std.mean()) + 1e-12
        self.mean.copy_(mean.to(self.mean))
        self.scale.copy_(1.0 / (std + eps))
        self.standardize = True
        self._full_fc6 = None

    def full_fc6(self) -> nn.Linear:
        """Return fc6 as the 25088 -> 4096 layer that reads the 7x7-pooled (power-normed) map.

        Standardisation is folded in: ``W (x - m) * s + b = (W s) x + (b - (W s) m)``.
        """
        if self.grid == 7 and not self.standardize:
            return self.fc6
        if self._full_fc6 is None:
            out = self.fc6.weight.shape[0]
            weight, bias = self.fc6.weight.double(), self.fc6.bias.double()
            if self.standardize:
                weight = weight * self.scale.double()
                bias = bias - weight @ self.mean.double()
            if self.grid != 7:
                pinv = torch.linalg.pinv(adaptive_pool_matrix(self.grid))  # (g*g, 49)
                weight = weight.view(out, 512, -1) @ pinv.to(weight.device)
            layer = nn.Linear(512 * 49, out).to(self.fc6.weight.device)
            with torch.no_grad():
                layer.weight.copy_(weight.reshape(out, 512 * 49))
                layer.bias.copy_(bias)
            # Not a registered submodule: a derived cache, never saved in the state_dict.
            object.__setattr__(self, "_full_fc6", layer)
        return self._full_fc6

    def _fc6(self, conv: torch.Tensor) -> torch.Tensor:
        if self.power == "sqrt":
            conv = conv.clamp_min(0).sqrt()
        if conv.ndim == 4 and tuple(conv.shape[-2:]) != (self.grid, self.grid):
            return self.full_fc6()(F.adaptive_avg_pool2d(conv, (7, 7)).flatten(1))
        conv = conv.flatten(1)
        if self.standardize:
            conv = (conv - self.mean) * self.scale
        return self.fc6(conv)

    def embed(self, conv: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return post-ReLU fc6 and fc7 for a conv map (N, 512, H, W) or compact rows."""
        fc6 = F.relu(self._fc6(conv.float()))
        return {"fc6": fc6, "fc7": F.relu(self.fc7(fc6))}

    def forward(self, conv: torch.Tensor) -> torch.Tensor:
        fc6 = self.dropout(F.relu(self._fc6(conv)))
        return self.classifier(self.dropout(F.relu(self.fc7(fc6))))

    def save(self, path: Path, meta: dict) -> None:
        """Write the head and its metadata (categories, preprocessing, metrics...)."""
        state = {k: v for k, v in self.state_dict().items()}
        torch.save({"format": CHECKPOINT_FORMAT, "grid": self.grid, "power": self.power,
                    "input": self.input, "standardize": self.standardize,
                    "n_classes": self.classifier.out_features, "state_dict": state, **meta}, path)

    @classmethod
    def load(cls, path: str | Path) -> tuple[FashionHead, dict]:
        """Return the head saved at `path` and its metadata."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no vgg16-fashion checkpoint at {path}")
        meta = torch.load(path, map_location="cpu", weights_only=True)
        if meta.get("format") not in range(1, CHECKPOINT_FORMAT + 1):
            raise ValueError(f"{path}: checkpoint format {meta.get('format')!r}, "
                             f"this engine reads 1 to {CHECKPOINT_FORMAT}")
        head = cls(meta["n_classes"], meta["grid"], power=meta.get("power"),
                   input=meta.get("input", "pool5"), standardize=meta.get("standardize", False))
        state = meta.pop("state_dict")
        if meta["format"] < 3:  # before the buffers: identity standardisation
            state = {"mean": head.mean, "scale": head.scale, **state}
        head.load_state_dict(state)
        return head.eval(), meta
