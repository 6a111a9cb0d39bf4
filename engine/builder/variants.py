"""Variants (network, layer, metric) and variant sets read from TOML files."""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SETS_DIR = Path(__file__).parent / "variants"
BUILTIN_SETS = ("classic", "offline")
# metric -> Annoy metric name
METRICS = {"l1": "manhattan", "l2": "euclidean", "hamming": "hamming", "cosine": "angular"}
METRIC_NAMES = {"l1": "L1", "l2": "L2", "hamming": "Hamming", "cosine": "cosine"}
LAYER_NAMES = {"fc6": "FC6", "fc7": "FC7", "pool5": "pool5", "gap": "GAP"}
NETWORK_NAMES = {
    "vgg16-imagenet": "VGG16 ImageNet",
    "mobilenet_v2-imagenet": "MobileNetV2 ImageNet",
    "vgg16-fashion": "VGG16 fine-tuned on clothing",
}


@dataclass(frozen=True)
class Variant:
    """One way to pick a match: a network's layer compared under a metric."""

    network: str | None
    layer: str | None
    metric: str | None
    label: str | None = None  # human name override from the TOML file
    control: bool = False

    @property
    def slug(self) -> str:
        return "random" if self.control else f"{self.network}.{self.layer}.{self.metric}"

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        if self.control:
            return "Random catalog item (control)"
        network = NETWORK_NAMES.get(self.network, self.network)
        return (f"{network}, {LAYER_NAMES.get(self.layer, self.layer)}, "
                f"{METRIC_NAMES.get(self.metric, self.metric)}")

    @property
    def feature_key(self) -> str:
        return f"{self.network}.{self.layer}"

    def manifest_entry(self) -> dict:
        return {"slug": self.slug, "name": self.name, "network": self.network,
                "layer": self.layer, "metric": self.metric, "control": self.control}


RANDOM = Variant(None, None, None, control=True)


@dataclass(frozen=True)
class VariantSet:
    """A named list of variants, with why it was chosen."""

    name: str
    variants: tuple[Variant, ...]
    source: str
    reason: str = ""

    def needed(self) -> dict[str, list[str]]:
        """Return the layers each network must produce, in first-use order."""
        out: dict[str, list[str]] = {}
        for v in self.variants:
            layers = out.setdefault(v.network, [])
            if v.layer not in layers:
                layers.append(v.layer)
        return out


def _network_layers() -> dict[str, tuple[str, ...]]:
    from engine.nets.networks import NETWORKS

    return {slug: tuple(spec.layers) for slug, spec in NETWORKS.items()}


def parse_variants(data: dict, where: str) -> list[Variant]:
    """Validate the [[variant]] tables of a variant set; return them as Variants."""
    entries = data.get("variant")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: needs at least one [[variant]] table "
                         "with network, layer and metric")
    networks = _network_layers()
    variants, slugs = [], set()
    for n, entry in enumerate(entries, start=1):
        at = f"{where}: variant {n}"
        unknown = set(entry) - {"network", "layer", "metric", "name"}
        if unknown:
            raise ValueError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}; "
                             "accepted: network, layer, metric, name")
        network, layer, metric = (entry.get(k) for k in ("network", "layer", "metric"))
        if network not in networks:
            raise ValueError(f"{at}: unknown network {network!r}; accepted: "
                             f"{', '.join(networks)}")
        if layer not in networks[network]:
            raise ValueError(f"{at}: network {network} has no layer {layer!r}; accepted: "
                             f"{', '.join(networks[network])}")
        if metric not in METRICS:
            raise ValueError(f"{at}: unknown metric {metric!r}; accepted: {', '.join(METRICS)}")
        variant = Variant(network, layer, metric, label=entry.get("name"))
        if variant.slug in slugs:
            raise ValueError(f"{at}: duplicate variant {variant.slug}")
        slugs.add(variant.slug)
        variants.append(variant)
    return variants


def load_variant_set(spec: str | Path, reason: str = "") -> VariantSet:
    """Load a built-in variant set by name (classic, offline) or a TOML file by path."""
    spec = str(spec)
    if spec in BUILTIN_SETS:
        path = SETS_DIR / f"{spec}.toml"
    elif spec.endswith(".toml"):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"variant set file not found: {path}")
    else:
        raise ValueError(f"unknown variant set {spec!r}; accepted: auto, "
                         f"{', '.join(BUILTIN_SETS)} or a path to a .toml file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    variants = parse_variants(data, str(path))
    name = data.get("name") or path.stem
    return VariantSet(name=str(name), variants=tuple(variants), source=str(path),
                      reason=reason or f"asked for {spec}")


def choose_variant_set(spec: str = "auto", *, allow_download: bool = False) -> VariantSet:
    """Resolve --variants: auto picks classic when ImageNet FC weights resolve, else offline."""
    if spec != "auto":
        return load_variant_set(spec)
    from engine.nets.networks import imagenet_fc_available

    ok, why = imagenet_fc_available(allow_download=allow_download)
    name = "classic" if ok else "offline"
    reason = f"auto: {name} because {why}" if why else f"auto: {name}"
    logger.info("Variant set %s", reason)
    return load_variant_set(name, reason=reason)


def variants_of(state) -> list[Variant]:
    """Return the Variants of a build's variant set, as its engine-state.json records it."""
    return [Variant(v["network"], v["layer"], v["metric"], label=v.get("label"))
            for v in state.variant_set["variants"]]
