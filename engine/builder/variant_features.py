"""A build's features, the torch side: every variant's network/layer rows.

The pipeline streams them (builder.extract): `pass_batches` runs one pretrained network
over the images and yields float16 batches (one VGG16 pass gives every VGG16 layer and
the conv map vgg16-fashion reads); `train_fashion` trains the head on a sample of those
conv maps and `fashion_batches` embeds them part by part. `compute_variant_features`
does all of it in memory for small image sets; retraining embeds a fresh query pool with
the build's trained head (`embed_with_checkpoint`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.nets import networks
from engine.nets.fashion_head import CHECKPOINT_NAME, DEFAULT_INPUT, INPUTS, TRUNK_TAPS, FashionHead
from engine.nets.features import image_loader, iter_model, prepare, resolve_device, run_model
from engine.nets.taps import MobileNetV2Taps, VGG16Taps
from engine.nets.train import DEFAULT_EPOCHS, embed_rows, label_indices, train_fashion_head


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
    model = prepare(VGG16Taps(source, sorted(taps), fc=fc), device)
    loader = image_loader(images, image_size, batch_size, 0, device)
    return run_model(model, loader, device, desc="vgg16 conv", progress=progress), source


def weights_origin(network: str, *, allow_download: bool = False) -> dict:
    """Return where a pretrained network's weights come from (for fingerprints, reports)."""
    source = networks.resolve_weights(network, allow_download=allow_download)
    return {"origin": source.origin, "preprocessing": source.preprocessing,
            "reason": source.reason}


def network_model(network: str, taps: list[str], *, device: str,
                  allow_download: bool = False):
    """Return (model, torch device) for one pretrained network's taps (vgg16-imagenet:
    its layers and the conv maps conv4/conv the fashion head reads), ready for inference."""
    torch_device = resolve_device(device)
    source = networks.resolve_weights(network, allow_download=allow_download)
    if network == "mobilenet_v2-imagenet":
        model = MobileNetV2Taps(source)
    else:
        fc = networks.load_vgg16_fc(source) if {"fc6", "fc7"} & set(taps) else None
        model = VGG16Taps(source, sorted(taps), fc=fc)
    return prepare(model, torch_device), torch_device


def model_batches(model, torch_device, images, taps: list[str], *, image_size: int,
                  batch_size: int, num_workers: int = 0, progress: bool = True,
                  desc: str = "features") -> Iterator[dict[str, np.ndarray]]:
    """Yield {tap: float16 rows} batches of a network_model over `images`, in order."""
    loader = image_loader(images, image_size, batch_size, num_workers, torch_device)
    for batch in iter_model(model, loader, torch_device, desc=desc, progress=progress):
        yield {tap: batch[tap] for tap in taps}


def pass_batches(images, network: str, taps: list[str], *, image_size: int, device: str,
                 batch_size: int, num_workers: int = 0, allow_download: bool = False,
                 progress: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Yield {tap: float16 rows} batches of one pretrained network over `images`."""
    model, torch_device = network_model(network, taps, device=device,
                                        allow_download=allow_download)
    yield from model_batches(model, torch_device, images, taps, image_size=image_size,
                             batch_size=batch_size, num_workers=num_workers,
                             progress=progress, desc=network)


def train_fashion(conv: np.ndarray, labels: np.ndarray, categories: list[str], *,
                  fashion_input: str, image_size: int, seed: int, device: str,
                  checkpoint: Path, fingerprint: str, epochs: int = DEFAULT_EPOCHS,
                  allow_download: bool = False) -> tuple[FashionHead, dict]:
    """Train vgg16-fashion's head on conv-map rows (labels: category codes), save it at
    `checkpoint` with `fingerprint`; return it and its training report."""
    source = networks.resolve_weights("vgg16-imagenet", allow_download=allow_download)
    meta = {"network": "vgg16-fashion", "conv_origin": source.origin,
            "preprocessing": source.preprocessing, "image_size": image_size,
            "layers": ["fc6", "fc7"], "post_relu": True, "fingerprint": fingerprint}
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    head, metrics = train_fashion_head(conv, label_indices(labels, categories), categories,
                                       seed=seed, epochs=epochs, device=device,
                                       out=checkpoint, meta=meta, input=fashion_input)
    return head, _training_info(source, fashion_input, metrics, checkpoint)


def _training_info(source, fashion_input, metrics, checkpoint) -> dict:
    return {"origin": f"trained on the catalog (conv: {source.origin})",
            "input": fashion_input, "standardize": metrics["standardize"],
            "preprocessing": source.preprocessing, "checkpoint": str(checkpoint),
            "train_accuracy": metrics["train_accuracy"], "val_accuracy": metrics["val_accuracy"],
            "epochs": metrics["epochs"], "train_seconds": round(metrics["seconds"], 3),
            "n_train": metrics["n_train"], "n_val": metrics["n_val"]}


def load_fashion(checkpoint: Path, fingerprint: str) -> FashionHead | None:
    """Return the head saved at `checkpoint` if it was trained for `fingerprint`."""
    if not checkpoint.is_file():
        return None
    head, meta = FashionHead.load(checkpoint)
    return head if meta.get("fingerprint") == fingerprint else None


def fashion_batches(head: FashionHead, conv_parts, layers: list[str], *,
                    device: str) -> Iterator[dict[str, np.ndarray]]:
    """Yield {layer: float16 rows} of the head over conv-map parts, in order."""
    torch_device = resolve_device(device)
    for _, conv in conv_parts:
        yield embed_rows(head, conv, layers, device=torch_device)


def compute_variant_features(images, labels, categories, needed: dict[str, list[str]], *,
                             image_size: int, device: str, batch_size: int, seed: int,
                             checkpoint_dir: Path, is_train_mask, epochs: int = DEFAULT_EPOCHS,
                             fashion_input: str = DEFAULT_INPUT,
                             allow_download: bool = False, progress: bool = True
                             ) -> tuple[dict[tuple[str, str], np.ndarray], dict]:
    """Return {(network, layer): float16 rows} for `needed`, one VGG16 pass for all VGGs;
    `fashion_input` is the conv map vgg16-fashion's fc6 reads (pool4 or pool5)."""
    is_train_mask = _checked_inputs(images, labels, needed, is_train_mask, fashion_input)
    torch_device = resolve_device(device)
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


def _checked_inputs(images, labels, needed, is_train_mask, fashion_input) -> np.ndarray:
    """Check what compute_variant_features is asked for; return the training mask."""
    if fashion_input not in INPUTS:
        raise ValueError(f"unknown vgg16-fashion input {fashion_input!r}; "
                         f"accepted: {', '.join(INPUTS)}")
    for network, layers in needed.items():
        networks.check_layers(network, layers)
    is_train_mask = np.asarray(is_train_mask, dtype=bool)
    if len(is_train_mask) != len(images) or len(labels) != len(images):
        raise ValueError("images, labels and is_train_mask must have the same length")
    return is_train_mask


def _mobilenet_pass(images, *, image_size, device, batch_size, allow_download, progress):
    source = networks.resolve_weights("mobilenet_v2-imagenet", allow_download=allow_download)
    model = prepare(MobileNetV2Taps(source), device)
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
    info = _training_info(source, fashion_input, metrics, path)
    info["embed_seconds"] = round(time.perf_counter() - start, 3)
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
