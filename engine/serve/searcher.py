"""A build loaded once to answer photos: its networks, its metric spaces, its indexes.

Features are computed as the build computed them: the same networks and weights, the
same image size and resizing (engine.nets.features.ImageTensors), the build's trained
vgg16-fashion head, the same metric transform (hamming's medians from the same sample)
and each variant's index, opened memory-light (Annoy maps its file, IVF reads its lists
with pread) at the search setting the pairs stage reached (search_k, nprobe). A
challenger build's retrained variants re-rank their base's candidates
(engine.serve.retrained), so the service answers for every variant the build has.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.builder.index import AnnoySearch, open_index
from engine.builder.metric import MetricSpace
from engine.builder.pairs import default_search_k
from engine.builder.variants import variants_of
from engine.builder.whitebox import KEY_PREFIX, whitebox_row
from engine.formats.builddir import open_build
from engine.serve.retrained import RetrainedVariants

MAX_K = 50


@dataclass
class Variant:
    """One variant ready to search: its slug, feature key, metric space and index."""

    slug: str
    feature_key: str
    space: MetricSpace
    index: object
    features: object  # the build's rows of feature_key (memory-mapped)


class Embedder:
    """The build's networks, loaded once: photos -> {feature key: rows}, and each
    white-box family as whitebox.<family> (engine.builder.whitebox)."""

    def __init__(self, keys: list[str], *, checkpoint_dir: Path, image_size: int, device: str,
                 allow_download: bool):
        from engine.builder import variant_features as vf
        from engine.nets.fashion_head import CHECKPOINT_NAME, TRUNK_TAPS, FashionHead

        self.vf, self.image_size, self.keys = vf, image_size, keys
        layers: dict[str, list[str]] = {}
        for key in keys:
            network, layer = key.split(".", 1)
            layers.setdefault(network, []).append(layer)
        self.head = None
        if "vgg16-fashion" in layers:
            self.head, _ = FashionHead.load(checkpoint_dir / CHECKPOINT_NAME)
            self.fashion_layers = layers.pop("vgg16-fashion")
            layers.setdefault("vgg16-imagenet", []).append(TRUNK_TAPS[self.head.input])
        self.models = {network: (vf.network_model(network, sorted(set(taps)), device=device,
                                                  allow_download=allow_download), taps)
                       for network, taps in layers.items()}

    def embed(self, photos: list) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for network, ((model, device), taps) in self.models.items():
            rows = {tap: [] for tap in taps}
            for batch in self.vf.model_batches(model, device, photos, sorted(set(taps)),
                                               image_size=self.image_size,
                                               batch_size=len(photos), progress=False):
                for tap in taps:
                    rows[tap].append(batch[tap])
            out.update({f"{network}.{tap}": np.concatenate(r) for tap, r in rows.items()})
        if self.head is not None:
            from engine.nets.fashion_head import TRUNK_TAPS
            from engine.nets.train import embed_rows

            device = next(iter(self.models.values()))[0][1]
            conv = out[f"vgg16-imagenet.{TRUNK_TAPS[self.head.input]}"]
            for layer, rows in embed_rows(self.head, conv, self.fashion_layers,
                                          device=device).items():
                out[f"vgg16-fashion.{layer}"] = rows
        rows = [whitebox_row(photo) for photo in photos]
        return {key: out[key] for key in self.keys} | {
            KEY_PREFIX + f: np.stack([r[f] for r in rows]) for f in rows[0]}


class Searcher:
    """A finished build, loaded once; `search(photos, k)` answers for every variant."""

    def __init__(self, build_dir: str | Path, *, device: str = "cpu"):
        started = time.perf_counter()
        self.build = open_build(build_dir)
        state, o = self.build.state, self.build.options
        table = self.build.table
        self.catalog_rows, self.image_id = table.catalog_rows, table.image_id
        self.category = [row["category"] for row in table.rows]
        self.build_id = self.build.manifest["build_id"]
        self.variants = [self._variant(v, o) for v in variants_of(state)]
        self.retrained = RetrainedVariants(self.build)
        keys = {v.feature_key for v in self.variants} | set(self.retrained.cnn_keys)
        self.embedder = Embedder(sorted(keys),
                                 checkpoint_dir=self.build.path / "checkpoints",
                                 image_size=o.image_size, device=device,
                                 allow_download=o.allow_download)
        self.load_seconds = round(time.perf_counter() - started, 2)

    def _variant(self, v, o) -> Variant:
        features = self.build.features(v.feature_key)
        space = MetricSpace.fit(features, v.metric, self.catalog_rows)
        info = self.build.state.reports["index"][v.slug]
        reached = self.build.state.reports.get("pairs", {}).get(v.slug, {})
        search_k = reached.get("search_k") or o.search_k or \
            default_search_k(len(self.catalog_rows), o.k, o.trees)
        index = open_index(self.build.path, info, v.metric, search_k=search_k)
        if not isinstance(index, AnnoySearch) and reached.get("nprobe"):
            index.nprobe = reached["nprobe"]
        return Variant(v.slug, v.feature_key, space, index, features)

    @property
    def slugs(self) -> list[str]:
        """Every variant the service answers for: indexed, then retrained."""
        return [v.slug for v in self.variants] + [r.slug for r in self.retrained.variants]

    def search(self, photos: list, k: int) -> list[dict[str, list[dict]]]:
        """Return, per photo, {variant slug: its k nearest catalog items, nearest first:
        [{"image_id", "category", "distance"}]}."""
        return self.search_features(self.embedder.embed(photos), len(photos), k)

    def search_features(self, features: dict[str, np.ndarray], photos: int,
                        k: int) -> list[dict[str, list[dict]]]:
        """search() for photos already embedded ({feature key: rows})."""
        k = max(1, min(k, MAX_K, len(self.catalog_rows)))
        none = [set()] * photos
        answers: list[dict] = [{} for _ in range(photos)]
        for v in self.variants:
            found = v.index.search(v.space.vectors(features[v.feature_key]), k,
                                   item_rows=self.catalog_rows, exclude=none)
            for p in range(photos):
                answers[p][v.slug] = self._matches(found.idx[p], found.dist[p])
        bases = {v.slug: v for v in self.variants}
        for r in self.retrained.variants:
            for p in range(photos):
                rows, dist = self.retrained.rank(r, bases[r.model.base], {
                    key: value[p:p + 1] for key, value in features.items()}, k,
                    self.catalog_rows)
                answers[p][r.slug] = self._matches(rows, dist)
        return answers

    def _matches(self, rows, distances) -> list[dict]:
        return [{"image_id": self.image_id[row], "category": self.category[row],
                 "distance": round(float(d), 5)}
                for row, d in zip(rows, distances, strict=True) if row >= 0]
