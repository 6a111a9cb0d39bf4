"""Extract features: batches of images through a network, float16 arrays aligned with rows.

Images are resized to a square ``image_size`` (no crop, so a garment is never cut off),
grayscale is replicated to three channels, and each network's own preprocessing runs on
the device. Inference runs in channels_last with bf16 autocast on CUDA, and on CPUs whose
oneDNN has bf16 kernels (AVX512-BF16/AMX: about twice as fast as float32 for VGG16 there,
features within 0.5% relative error); other CPUs stay in float32.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from engine.nets import networks
from engine.nets.taps import MobileNetV2Taps, VGG16Taps

logger = logging.getLogger(__name__)
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
MIN_IMAGE_SIZE = 32


def resolve_device(device: str) -> torch.device:
    """Return the torch device for "auto" | "cpu" | "cuda" | "cuda:N"."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"unknown device {device!r}; accepted: {DEVICE_CHOICES}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; "
                             f"accepted: {DEVICE_CHOICES} (use auto or cpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} does not exist: this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
    return torch.device(device)


def bf16_autocast(device: torch.device) -> bool:
    """Say whether to compute in bf16 autocast: on CUDA, and on CPUs with oneDNN bf16."""
    if device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_image_size(image_size: int) -> int:
    """Return image_size if VGG16 and MobileNetV2 can take it, else raise ValueError."""
    if isinstance(image_size, bool) or not isinstance(image_size, int) or \
            image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be an integer >= {MIN_IMAGE_SIZE} (224 is the "
                         f"reference), got {image_size!r}")
    return image_size


class ImageTensors(Dataset):
    """A sequence of PIL images as uint8 RGB tensors (3, size, size)."""

    def __init__(self, images: Sequence[Image.Image], image_size: int):
        self.images = images
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.images[i].convert("RGB")  # "L" is replicated to three channels
        size = (self.image_size, self.image_size)
        if image.size != size:
            image = image.resize(size, Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def image_loader(images, image_size: int, batch_size: int, num_workers: int,
                 device: torch.device) -> DataLoader:
    """Return a DataLoader of uint8 batches in row order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return DataLoader(ImageTensors(images, check_image_size(image_size)), batch_size=batch_size,
                      shuffle=False, num_workers=num_workers,
                      pin_memory=device.type == "cuda")


def prepare(model: nn.Module, device: torch.device) -> nn.Module:
    """Move a model to the device for inference, in channels_last."""
    return model.eval().to(device=device, memory_format=torch.channels_last)


def iter_model(model: nn.Module, loader: DataLoader, device: torch.device, *,
               desc: str = "features", progress: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Run `model` (uint8 batch -> dict of tensors) over `loader`; yield float16 batches."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16_autocast(device))
    with torch.inference_mode(), autocast:
        for batch in tqdm(loader, desc=desc, unit="batch", disable=not progress, leave=False):
            x = batch.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            out = {}
            for name, value in model(x).items():
                value = value.float().flatten(1) if value.ndim > 2 else value.float()
                out[name] = value.cpu().numpy().astype(np.float16)
            yield out


def run_model(model: nn.Module, loader: DataLoader, device: torch.device, *,
              desc: str = "features", progress: bool = True) -> dict[str, np.ndarray]:
    """Run `model` over `loader` (iter_model); stack float16 arrays."""
    chunks: dict[str, list[np.ndarray]] = {}
    for batch in iter_model(model, loader, device, desc=desc, progress=progress):
        for name, value in batch.items():
            chunks.setdefault(name, []).append(value)
    return {name: np.concatenate(parts) for name, parts in chunks.items()}


class FashionTaps(nn.Module):
    """The VGG16 conv trunk followed by a trained fashion head; returns fc6/fc7."""

    def __init__(self, trunk: nn.Module, head: nn.Module, layers):
        super().__init__()
        self.trunk, self.head, self.layers = trunk, head, tuple(layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        taps = self.head.embed(self.trunk(x)[self.head.trunk_tap])
        return {layer: taps[layer] for layer in self.layers}


def build_model(network: str, layers, *, fashion_checkpoint=None,
                allow_download: bool = False) -> tuple[nn.Module, networks.WeightSource]:
    """Return the tap model for (network, layers) and the weight source it was built from."""
    if network == "vgg16-fashion":
        from engine.nets.fashion_head import FashionHead

        networks.check_layers(network, layers)
        if fashion_checkpoint is None:
            raise ValueError("vgg16-fashion needs fashion_checkpoint (a trained "
                             "vgg16-fashion.pt); train it first (engine.nets.train)")
        head, meta = FashionHead.load(fashion_checkpoint)
        source = networks.source_for_origin(network, meta["conv_origin"])
        trunk = VGG16Taps(source, [head.trunk_tap], fc=None)
        return FashionTaps(trunk, head, layers), source
    source = networks.resolve_weights(network, allow_download=allow_download)
    networks.check_layers(network, layers, source)
    if network == "mobilenet_v2-imagenet":
        return MobileNetV2Taps(source), source
    fc = networks.load_vgg16_fc(source) if {"fc6", "fc7"} & set(layers) else None
    return VGG16Taps(source, layers, fc=fc), source


def extract_features(images, network: str, layers: list[str], *, image_size: int = 224,
                     device: str = "auto", batch_size: int = 64, num_workers: int = 0,
                     fashion_checkpoint: str | Path | None = None, progress: bool = True,
                     allow_download: bool = False) -> dict[str, np.ndarray]:
    """Return {layer: float16 array (len(images), dim)} with rows aligned with `images`."""
    torch_device = resolve_device(device)
    layers = list(layers)
    model, source = build_model(network, layers, fashion_checkpoint=fashion_checkpoint,
                                allow_download=allow_download)
    loader = image_loader(images, image_size, batch_size, num_workers, torch_device)
    start = time.perf_counter()
    out = run_model(prepare(model, torch_device), loader, torch_device,
                    desc=f"{network} {'/'.join(layers)}", progress=progress)
    seconds = time.perf_counter() - start
    logger.info("%s: %d images in %.1f s (%.0f images/s) on %s, weights: %s", network,
                len(images), seconds, len(images) / max(seconds, 1e-9), torch_device,
                source.origin)
    if not len(images):
        dims = networks.NETWORKS[network].dims
        return {layer: np.zeros((0, dims[layer]), np.float16) for layer in layers}
    return {layer: out[layer] for layer in layers}
