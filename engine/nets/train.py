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

The head itself, and why it trains on a compact fc6, is engine.nets.fashion_head.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from engine.nets.fashion_head import DEFAULT_INPUT, FashionHead, pool5_grid
from engine.nets.features import bf16_autocast, resolve_device

logger = logging.getLogger(__name__)

DEFAULT_EPOCHS = 8


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
    _check_training_data(conv_features, labels, epochs)
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
        "standardize": head.standardize}
    logger.info("vgg16-fashion: train accuracy %.4f, val accuracy %.4f, %.1f s",
                metrics["train_accuracy"], metrics["val_accuracy"], seconds)
    head = head.eval().cpu()
    if out is not None:
        head.save(Path(out), {"categories": list(categories), "metrics": metrics, **(meta or {})})
    return head, metrics


def _check_training_data(conv_features, labels, epochs: int) -> None:
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if len(conv_features) != len(labels) or not len(labels):
        raise ValueError(f"need as many labels as feature rows (> 0): "
                         f"{len(conv_features)} rows, {len(labels)} labels")


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
