"""Feature-family distances of (query, match) rows for retraining (engine.retrain.model).

Rows are the build's catalog.csv rows, then a fresh pool's queries, then the tried
photos retraining can use (engine.retrain.photos). For every pair the space returns
one raw distance per family (`family_columns`, which the query service uses too): the
base variant's own metric, each extracted layer (L2 between L2-normalised rows), each
white-box family (L1).
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


def normalised(rows: np.ndarray) -> np.ndarray:
    """Return rows scaled to unit L2 length (float32)."""
    rows = np.asarray(rows, np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def metric_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Return the distance between matching rows of a metric's vectors."""
    diff = a - b
    if metric in ("l1", "hamming"):  # bits are 0/1 floats: L1 counts differing bits
        return np.abs(diff).sum(axis=1)
    return np.sqrt((diff * diff).sum(axis=1))


def family_columns(metric: str, base: tuple, cnn: list[tuple], whitebox: list[tuple]
                   ) -> np.ndarray:
    """Return (pairs, families) raw distances of matching (query, match) rows, families
    in engine.retrain.model's order: base (its metric's vectors), each CNN layer (rows
    already L2-normalised), each white-box family."""
    cols = [metric_distance(*base, metric)]
    cols += [np.linalg.norm(q - m, axis=1) for q, m in cnn]
    cols += [family_distance(q, m) for q, m in whitebox]
    return np.stack(cols, axis=1)


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
            self._cnn[key] = normalised(self._combined(key))
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
        metric, vectors = self.variants[base].metric, self.base_vectors(base)
        for start in range(0, len(q), CHUNK):
            qs, ms = q[start:start + CHUNK], m[start:start + CHUNK]
            out.append(family_columns(
                metric, (vectors[qs], vectors[ms]),
                [(self.cnn(k)[qs], self.cnn(k)[ms]) for k in self.keys],
                [(self.whitebox[f][qs], self.whitebox[f][ms]) for f in FAMILIES]))
        return np.concatenate(out) if out else np.zeros((0, 1 + len(self.keys) + len(FAMILIES)))
