"""Train vgg16-fashion: ImageNet VGG16 conv layers frozen, new fc6/fc7 and a softmax.

The conv trunk is frozen, so it runs once over all images and the head trains on the
stored conv maps: practical on a CPU.

Which map fc6 reads (``input``). The article's fc6 reads pool5, the last conv block's map.
By default ours reads pool4, the fourth block's map, through the first ten conv layers
(``input="pool5"`` keeps the article's). On the default build (Fashion-MNIST at 64 px)
pool5 holds ImageNet-specific parts that transfer poorly to small grayscale garments: a
linear probe on pool5 classifies 84% of the queries, on pool4 90%, and every head
trained on pool5 (about 30 recipes) left the fc6/fc7 searches at 0.84 to 0.88 top-1,
where pool4 lifts them to 0.88 to 0.91 (docs/benchmarks.md).

The map goes through an element-wise square root (``power="sqrt"``) and is then
standardised per value with the training rows' mean and standard deviation, kept in the
checkpoint (``standardize``): fc6 sees inputs of one scale. On pool4 without it, 0.5% of
fc6's units fire per image, and its Hamming code has hardly any bits to compare; with it,
47% of the bits are ones.

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

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine import networks
from engine.features import bf16_autocast, image_loader, prepare, resolve_device, run_model
from engine.variants import DEFAULT_FASHION_INPUT, FASHION_INPUTS

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 8
CHECKPOINT_NAME = "vgg16-fashion.pt"
# 2 added "power" (format 1 loads with power None); 3 added "input" and the standardisation
# buffers (formats 1 and 2 load reading pool5, unstandardised).
CHECKPOINT_FORMAT = 3
POWERS = (None, "sqrt")
INPUTS = FASHION_INPUTS
DEFAULT_INPUT = DEFAULT_FASHION_INPUT
# The VGG16Taps tap that carries each input map.
TRUNK_TAPS = {"pool4": "conv4", "pool5": "conv"}


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


def label_indices(labels, categories: list[str]) -> np.ndarray:
    """Return labels as int64 indices into `categories` (accepts names or indices)."""
    labels = np.asarray(labels)
    if labels.dtype.kind in "iu":
        bad = (labels < 0) | (labels >= len(categories))
        if bad.any():
            raise ValueError(f"label {labels[bad][0]} out of range for "
                             f"{len(categories)} categories")
        return labels.astype(np.int64)
    index = {name: i for i, name in enumerate(categories)}
    unknown = sorted({str(x) for x in labels} - set(index))
    if unknown:
        raise ValueError(f"unknown categories {unknown[:5]}; known: {categories}")
    return np.array([index[str(x)] for x in labels], dtype=np.int64)


def split_validation(labels: np.ndarray, val_fraction: float, seed: int):
    """Return (train_rows, val_rows): a seeded, category-stratified validation slice."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        val.extend(rows[: int(round(len(rows) * val_fraction))])
    val = np.sort(np.array(val, dtype=np.int64))
    return np.setdiff1d(np.arange(len(labels)), val), val


@torch.inference_mode()
def _accuracy(head: FashionHead, x: torch.Tensor, y: torch.Tensor, batch: int = 1024) -> float:
    if not len(y):
        return float("nan")
    head.eval()
    right = sum((head(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                for i in range(0, len(y), batch))
    return right / len(y)


def _fit(head, x, y, *, epochs, batch_size, lr, seed, device, progress):
    """Train `head` with AdamW and a one-cycle schedule; return the loss per epoch."""
    generator = torch.Generator().manual_seed(seed)
    # bf16 matmuls halve the CPU time of the 25M-parameter head; weights stay float32.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16,
                              enabled=bf16_autocast(device))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(y) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1))
    losses = []
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for i in range(0, len(y), batch_size):
            rows = order[i:i + batch_size]
            with autocast:
                logits = head(x[rows].to(device))
            loss = F.cross_entropy(logits.float(), y[rows].to(device), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(rows)
        losses.append(total / len(y))
        if progress:
            logger.info("vgg16-fashion epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
    return losses


@torch.no_grad()
def input_moments(head: FashionHead, x: torch.Tensor, rows: torch.Tensor,
                  chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the mean and standard deviation of the head's power-normed input over `rows`."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    square = torch.zeros_like(total)
    for i in range(0, len(rows), chunk):
        block = x[rows[i:i + chunk]].double()
        if head.power == "sqrt":
            block = block.clamp_min(0).sqrt()
        total += block.sum(0)
        square += (block * block).sum(0)
    n = max(len(rows), 1)
    mean = total / n
    return mean.float(), (square / n - mean * mean).clamp_min(0).sqrt().float()


def train_fashion_head(conv_features: np.ndarray, labels: np.ndarray, categories: list[str], *,
                       seed: int = 0, epochs: int = DEFAULT_EPOCHS, val_fraction: float = 0.1,
                       device: str = "auto", out: Path | None = None, batch_size: int = 128,
                       lr: float = 1e-3, meta: dict | None = None, input: str = DEFAULT_INPUT,
                       standardize: bool = True,
                       progress: bool = True) -> tuple[FashionHead, dict]:
    """Train fc6/fc7/softmax on compact conv maps (`input`); return the head and its metrics.

    With `standardize`, fc6's input is standardised with the training rows' statistics.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(conv_features) != len(labels) or not len(labels):
        raise ValueError(f"need as many labels as feature rows (> 0): "
                         f"{len(conv_features)} rows, {len(labels)} labels")
    torch_device = resolve_device(device)
    y_all = label_indices(labels, categories)
    train_rows, val_rows = split_validation(y_all, val_fraction, seed)
    torch.manual_seed(seed)
    head = FashionHead(len(categories), pool5_grid(conv_features.shape[1]), input=input)
    x = torch.from_numpy(np.asarray(conv_features, dtype=np.float32))
    y = torch.from_numpy(y_all)
    start = time.perf_counter()
    if standardize:
        head.set_standardization(*input_moments(head, x, torch.from_numpy(train_rows)))
    head = head.to(torch_device)
    losses = _fit(head, x[train_rows], y[train_rows], epochs=epochs, batch_size=batch_size,
                  lr=lr, seed=seed, device=torch_device, progress=progress)
    seconds = time.perf_counter() - start
    x_dev, y_dev = x.to(torch_device), y.to(torch_device)
    metrics = {
        "train_accuracy": _accuracy(head, x_dev[train_rows], y_dev[train_rows]),
        "val_accuracy": _accuracy(head, x_dev[val_rows], y_dev[val_rows]),
        "epochs": epochs, "seconds": seconds, "losses": losses,
        "n_train": len(train_rows), "n_val": len(val_rows), "seed": seed,
        "bf16_autocast": bf16_autocast(torch_device), "input": input,
        "standardize": head.standardize,
    }
    logger.info("vgg16-fashion: train accuracy %.4f, val accuracy %.4f, %.1f s",
                metrics["train_accuracy"], metrics["val_accuracy"], seconds)
    head = head.eval().cpu()
    if out is not None:
        head.save(Path(out), {"categories": list(categories), "metrics": metrics,
                              **(meta or {})})
    return head, metrics


@torch.inference_mode()
def embed_rows(head: FashionHead, conv_features: np.ndarray, layers, *,
               device: torch.device, batch_size: int = 512) -> dict[str, np.ndarray]:
    """Return float16 {layer: (N, 4096)} post-ReLU fc6/fc7 for compact conv-map rows."""
    head = head.eval().to(device)
    parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}
    for i in range(0, len(conv_features), batch_size):
        x = torch.from_numpy(np.asarray(conv_features[i:i + batch_size], np.float32)).to(device)
        taps = head.embed(x)
        for layer in layers:
            parts[layer].append(taps[layer].cpu().numpy().astype(np.float16))
    return {layer: (np.concatenate(p) if p else np.zeros((0, 4096), np.float16))
            for layer, p in parts.items()}


def _timed(report: dict, key: str, n: int, start: float, **extra) -> None:
    seconds = time.perf_counter() - start
    report[key] = {"seconds": round(seconds, 3),
                   "images_per_second": round(n / max(seconds, 1e-9), 1), **extra}


def _vgg16_pass(images, needed, *, image_size, device, batch_size, allow_download, progress,
                fashion_input=DEFAULT_INPUT):
    """Run the VGG16 conv trunk once; return (taps, source)."""
    imagenet_layers = list(needed.get("vgg16-imagenet", []))
    source = networks.resolve_weights("vgg16-imagenet", allow_download=allow_download)
    if imagenet_layers:
        networks.check_layers("vgg16-imagenet", imagenet_layers, source)
    fashion_tap = {TRUNK_TAPS[fashion_input]} if needed.get("vgg16-fashion") else set()
    taps = set(imagenet_layers) | fashion_tap
    fc = networks.load_vgg16_fc(source) if {"fc6", "fc7"} & taps else None
    model = prepare(networks.VGG16Taps(source, sorted(taps), fc=fc), device)
    loader = image_loader(images, image_size, batch_size, 0, device)
    return run_model(model, loader, device, desc="vgg16 conv", progress=progress), source


def compute_variant_features(images, labels, categories, needed: dict[str, list[str]], *,
                             image_size: int, device: str, batch_size: int, seed: int,
                             checkpoint_dir: Path, is_train_mask, epochs: int = DEFAULT_EPOCHS,
                             fashion_input: str = DEFAULT_INPUT,
                             allow_download: bool = False, progress: bool = True
                             ) -> tuple[dict[tuple[str, str], np.ndarray], dict]:
    """Return {(network, layer): float16 rows} for `needed`, one VGG16 pass for all VGGs.

    `fashion_input` is the conv map vgg16-fashion's fc6 reads (pool4 or pool5).
    """
    if fashion_input not in INPUTS:
        raise ValueError(f"unknown vgg16-fashion input {fashion_input!r}; "
                         f"accepted: {', '.join(INPUTS)}")
    for network, layers in needed.items():
        networks.check_layers(network, layers)
    torch_device = resolve_device(device)
    is_train_mask = np.asarray(is_train_mask, dtype=bool)
    if len(is_train_mask) != len(images) or len(labels) != len(images):
        raise ValueError("images, labels and is_train_mask must have the same length")
    features: dict[tuple[str, str], np.ndarray] = {}
    report: dict = {"image_size": image_size, "device": str(torch_device),
                    "images": len(images), "networks": {}}
    if needed.get("vgg16-imagenet") or needed.get("vgg16-fashion"):
        start = time.perf_counter()
        taps, source = _vgg16_pass(images, needed, image_size=image_size, device=torch_device,
                                   batch_size=batch_size, allow_download=allow_download,
                                   progress=progress, fashion_input=fashion_input)
        _timed(report["networks"], "vgg16-imagenet", len(images), start, origin=source.origin,
               preprocessing=source.preprocessing, reason=source.reason)
        for layer in needed.get("vgg16-imagenet", []):
            features[("vgg16-imagenet", layer)] = taps[layer]
        if needed.get("vgg16-fashion"):
            fashion, info = _fashion_features(
                taps.pop(TRUNK_TAPS[fashion_input]), labels, categories,
                needed["vgg16-fashion"], source, image_size=image_size, device=torch_device,
                seed=seed, epochs=epochs, checkpoint_dir=Path(checkpoint_dir),
                is_train_mask=is_train_mask, fashion_input=fashion_input)
            features.update(fashion)
            report["networks"]["vgg16-fashion"] = info
    if needed.get("mobilenet_v2-imagenet"):
        start = time.perf_counter()
        out = _mobilenet_pass(images, image_size=image_size, device=torch_device,
                              batch_size=batch_size, allow_download=allow_download,
                              progress=progress)
        source = out.pop("source")
        features[("mobilenet_v2-imagenet", "gap")] = out["gap"]
        _timed(report["networks"], "mobilenet_v2-imagenet", len(images), start,
               origin=source.origin, preprocessing=source.preprocessing, reason=source.reason)
    return features, report


def _mobilenet_pass(images, *, image_size, device, batch_size, allow_download, progress):
    source = networks.resolve_weights("mobilenet_v2-imagenet", allow_download=allow_download)
    model = prepare(networks.MobileNetV2Taps(source), device)
    loader = image_loader(images, image_size, batch_size, 0, device)
    return {**run_model(model, loader, device, desc="mobilenet_v2", progress=progress),
            "source": source}


def _fashion_features(conv, labels, categories, layers, source, *, image_size, device, seed,
                      epochs, checkpoint_dir, is_train_mask, fashion_input):
    """Train the head on the catalog rows, save it, and embed every row."""
    if not is_train_mask.any():
        raise ValueError("vgg16-fashion needs at least one training (catalog) row")
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / CHECKPOINT_NAME
    meta = {"network": "vgg16-fashion", "conv_origin": source.origin,
            "preprocessing": source.preprocessing, "image_size": image_size,
            "layers": ["fc6", "fc7"], "post_relu": True}
    labels = label_indices(labels, categories)
    head, metrics = train_fashion_head(conv[is_train_mask], labels[is_train_mask], categories,
                                       seed=seed, epochs=epochs, device=str(device),
                                       out=path, meta=meta, input=fashion_input)
    start = time.perf_counter()
    out = embed_rows(head, conv, layers, device=device)
    embed_seconds = time.perf_counter() - start
    info = {"origin": f"trained on the catalog (conv: {source.origin})",
            "input": fashion_input, "standardize": metrics["standardize"],
            "preprocessing": source.preprocessing, "checkpoint": str(path),
            "train_accuracy": metrics["train_accuracy"], "val_accuracy": metrics["val_accuracy"],
            "epochs": metrics["epochs"], "train_seconds": round(metrics["seconds"], 3),
            "embed_seconds": round(embed_seconds, 3), "n_train": metrics["n_train"],
            "n_val": metrics["n_val"]}
    return {("vgg16-fashion", layer): out[layer] for layer in layers}, info


def embed_with_checkpoint(images, needed: dict[str, list[str]], *, checkpoint_dir: Path,
                          image_size: int, device: str, batch_size: int = 64,
                          allow_download: bool = False, progress: bool = False
                          ) -> dict[tuple[str, str], np.ndarray]:
    """Return {(network, layer): float16 rows} for new images, with the build's trained
    vgg16-fashion head (never retrained) and the same pretrained networks."""
    for network, layers in needed.items():
        networks.check_layers(network, layers)
    torch_device = resolve_device(device)
    features: dict[tuple[str, str], np.ndarray] = {}
    if needed.get("vgg16-imagenet") or needed.get("vgg16-fashion"):
        head = None
        fashion_input = DEFAULT_INPUT
        if needed.get("vgg16-fashion"):
            head, _ = FashionHead.load(Path(checkpoint_dir) / CHECKPOINT_NAME)
            fashion_input = head.input
        taps, _ = _vgg16_pass(images, needed, image_size=image_size, device=torch_device,
                              batch_size=batch_size, allow_download=allow_download,
                              progress=progress, fashion_input=fashion_input)
        for layer in needed.get("vgg16-imagenet", []):
            features[("vgg16-imagenet", layer)] = taps[layer]
        if head is not None:
            out = embed_rows(head, taps[head.trunk_tap], needed["vgg16-fashion"],
                             device=torch_device)
            features.update({("vgg16-fashion", layer): arr for layer, arr in out.items()})
    if needed.get("mobilenet_v2-imagenet"):
        out = _mobilenet_pass(images, image_size=image_size, device=torch_device,
                              batch_size=batch_size, allow_download=allow_download,
                              progress=progress)
        features[("mobilenet_v2-imagenet", "gap")] = out["gap"]
    return features
