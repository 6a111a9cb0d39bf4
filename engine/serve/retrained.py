"""Retrained variants in the query service: a challenger build's learned metrics.

A retrained variant (docs/retrain.md) re-ranks its base variant's first CANDIDATES
catalog items by a learned distance over feature families. For a photo the service
does what the challenger's build did for its pool: the base's candidates from the
base's index, then the family distances (engine.retrain.families.family_columns)
between the photo's rows (its network features and white-box families) and each
candidate's, weighed by the model saved in the build (`retrained/<slug>.json`): its
photo weights when votes on photos taught it some (engine.retrain.photo_metric), else
the weights the game's votes taught it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.builder.whitebox import FAMILIES, KEY_PREFIX
from engine.formats.builddir import OpenBuild, feature_path
from engine.retrain.challenger import load_models
from engine.retrain.families import family_columns, normalised
from engine.retrain.model import Model
from engine.retrain.pool import CANDIDATES


@dataclass
class Retrained:
    """One retrained variant: its slug, its model and the families it reads."""

    slug: str
    model: Model
    cnn_keys: list[str]  # in the model's order
    families: list[str]  # white-box families, in the model's order

    @classmethod
    def of(cls, slug: str, model: Model) -> Retrained:
        return cls(slug, model, [f[4:] for f in model.families if f.startswith("cnn:")],
                   [f[3:] for f in model.families if f.startswith("wb:")])


class RetrainedVariants:
    """A build's retrained variants, with the catalog rows their re-ranking reads."""

    def __init__(self, build: OpenBuild):
        saved = load_models(build.path)
        listed = [v["slug"] for v in build.manifest["variants"] if v.get("retrained")]
        self.variants = [Retrained.of(slug, Model.from_dict(saved[slug]["model"]))
                         for slug in listed if slug in saved]
        self.cnn_keys = sorted({k for r in self.variants for k in r.cnn_keys})
        self.features = {k: build.features(k) for k in self.cnn_keys}
        self.whitebox = {f: self._whitebox(build, f) for f in FAMILIES} if self.variants else {}

    @staticmethod
    def _whitebox(build: OpenBuild, family: str) -> np.ndarray:
        path = feature_path(build.path, f"{KEY_PREFIX}{family}")
        if not path.is_file():
            raise ValueError(f"{build.path}: a retrained variant needs {path.name}, which a "
                             "challenger build holds; this build does not")
        return np.load(path, mmap_mode="r")

    def rank(self, r: Retrained, base, photo: dict[str, np.ndarray], k: int,
             catalog_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (catalog rows, learned distances) of one photo's k nearest under r:
        `base` is r's base variant as the searcher holds it, `photo` one row per key."""
        query = base.space.vectors(photo[base.feature_key])
        found = base.index.search(query, min(CANDIDATES, len(catalog_rows)),
                                  item_rows=catalog_rows, exclude=[set()])
        rows = found.idx[0][found.idx[0] >= 0]
        raw = family_columns(
            base.space.metric, (query, base.space.vectors(base.features[rows])),
            [(normalised(photo[key]), normalised(self.features[key][rows]))
             for key in r.cnn_keys],
            [(photo[KEY_PREFIX + f], self.whitebox[f][rows]) for f in r.families])
        model = r.model
        scaled = raw / np.array([model.scales[f] for f in model.families])
        distance = scaled @ model.photo_vector()  # its photo weights, when it learned them
        order = np.argsort(distance, kind="stable")[:k]  # ties keep the base's order
        return rows[order], distance[order]
