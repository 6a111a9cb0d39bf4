"""Feature-family distances of (query, match) rows for retraining (engine.retrain.model).

Rows are the build's catalog.csv rows, then a fresh pool's queries, then the tried
photos retraining can use (engine.retrain.photos). For every
pair the space returns one raw distance per family: the base variant's own metric,
each extracted layer (L2 between L2-normalised rows), each white-box family (L1).
"""

from __future__ import annotations

import numpy as np

from engine.builder.metric import metric_vectors
from engine.builder.variants import Variant, variants_of
from engine.builder.whitebox import FAMILIES, family_distance
from engine.formats.builddir import OpenBuild
from engine.retrain.photos import PhotoRows
from engine.retrain.pool import Pool, combined_features

CHUNK = 4096


def _normalised(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _metric_distance(vectors: np.ndarray, q: np.ndarray, m: np.ndarray, metric: str):
    diff = vectors[q] - vectors[m]
    if metric in ("l1", "hamming"):  # bits are 0/1 floats: L1 counts differing bits
        return np.abs(diff).sum(axis=1)
    return np.sqrt((diff * diff).sum(axis=1))


class FamilySpace:
    """Raw family distances over the build's rows, a pool's queries and tried photos."""

    def __init__(self, build: OpenBuild, pool: Pool, feature_keys: list[str],
                 photos: PhotoRows | None = None):
        self.build = build
        self.table = build.table
        self.variants: dict[str, Variant] = {v.slug: v for v in variants_of(build.state)}
        self.pool, self.keys = pool, feature_keys
        self.photos = photos or PhotoRows()
        self.n_build = len(self.table.rows)
        self.first_photo = self.n_build + len(pool)  # the row of the first photo
        self.whitebox = {f: np.concatenate([pool.whitebox[f], self.photos.whitebox[f]])
                         if len(self.photos) else pool.whitebox[f] for f in FAMILIES}
        self._cnn: dict[str, np.ndarray] = {}
        self._base: dict[str, np.ndarray] = {}

    def photo_row(self) -> dict[str, int]:
        """Return each usable photo's row, by its query id."""
        return {q: self.first_photo + j for j, q in enumerate(self.photos.query_ids)}

    def _combined(self, key: str) -> np.ndarray:
        extra = self.pool.features[key]
        if len(self.photos):
            extra = np.concatenate([extra, self.photos.features[key].astype(extra.dtype)])
        return combined_features(self.build, key, extra)

    def cnn(self, key: str) -> np.ndarray:
        if key not in self._cnn:
            self._cnn[key] = _normalised(self._combined(key))
        return self._cnn[key]

    def base_vectors(self, slug: str) -> np.ndarray:
        if slug not in self._base:
            v = self.variants[slug]
            self._base[slug], _ = metric_vectors(self._combined(v.feature_key), v.metric,
                                                 self.table.catalog_rows)
        return self._base[slug]

    def raw(self, base: str, q: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Return (pairs, families) raw distances, families as engine.retrain.model names them."""
        out = []
        for start in range(0, len(q), CHUNK):
            qs, ms = q[start:start + CHUNK], m[start:start + CHUNK]
            cols = [_metric_distance(self.base_vectors(base), qs, ms, self.variants[base].metric)]
            for key in self.keys:
                vec = self.cnn(key)
                cols.append(np.linalg.norm(vec[qs] - vec[ms], axis=1))
            for family in FAMILIES:
                wb = self.whitebox[family]
                cols.append(family_distance(wb[qs], wb[ms]))
            out.append(np.stack(cols, axis=1))
        return np.concatenate(out) if out else np.zeros((0, 1 + len(self.keys) + len(FAMILIES)))
