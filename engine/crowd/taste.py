"""Tastes: the probability that a person swipes dope on a (query, match) image pair.

A taste is data (a TOML file, presets in `engine/crowd/tastes/`). It weighs what a voter
sees, never a variant's features or index:

    logit = bias + category * [same category] + item * [same item_id]
                 + tone * s_tone + shape * s_shape + texture * s_texture + colour * s_colour

where the s_* are `engine.crowd.descriptors.similarities` of the two thumbnails, in [0, 1].
People differ in what they look at, not only in how lenient they are: each honest voter
u weighs feature k with w_k + taste_sd * |w_k| * z_uk, z_uk ~ Normal(0, 1) drawn once,
centred on the feature's mean m_k over the build's pairs so that only the relative
weights move (leniency moves the level):

    logit_u = logit + taste_sd * sum_k z_uk * |w_k| * (s_k - m_k) + leniency_u

For one pair that is Normal around the taste's logit with variance leniency_sd^2 +
taste_sd^2 * sum_k w_k^2 (s_k - m_k)^2, so the crowd's mean approval of a pair, the
truth, is exact by Gauss-Hermite: sigmoid averaged over that normal, with a share `lapse`
of votes cast at random. An honest crowd's dope rate on a variant's pairs converges to
the variant's true approval.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.crowd.descriptors import FEATURES, Appearance, describe, similarities
from engine.formats.builddir import BuildDir

TASTES_DIR = Path(__file__).parent / "tastes"
WEIGHTS = ("bias", "category", "item") + FEATURES
SPREAD = WEIGHTS[1:]  # the weights voters differ on (the bias is leniency's)
HERMITE_NODES = 24


def preset_names() -> list[str]:
    """Return the names of the shipped taste presets."""
    return sorted(p.stem for p in TASTES_DIR.glob("*.toml"))


@dataclass
class Taste:
    """A taste's weights and the population file's settings (engine.crowd.simulate reads those)."""

    name: str
    description: str
    weights: dict[str, float]
    population: dict = field(default_factory=dict)
    path: Path | None = None


def _check_weights(table, where: str) -> dict[str, float]:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: [taste] must be a table of weights")
    unknown = sorted(set(table) - set(WEIGHTS))
    if unknown:
        raise ValueError(f"{where}: unknown taste weight(s) {', '.join(unknown)}; "
                         f"known: {', '.join(WEIGHTS)}")
    weights = {}
    for key in WEIGHTS:
        value = table.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: taste weight {key} must be a number")
        weights[key] = float(value)
    return weights


def load_taste(name_or_path: str | Path) -> Taste:
    """Load a preset by name or a TOML file by path; raise ValueError naming the problem."""
    text = str(name_or_path)
    path = Path(text) if text.endswith(".toml") else TASTES_DIR / f"{text}.toml"
    if not path.is_file():
        if text.endswith(".toml"):
            raise ValueError(f"taste file not found: {text}")
        raise ValueError(f"unknown taste {text!r}; presets: {', '.join(preset_names())} "
                         "(or a path to a .toml file)")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    population = data.get("population", {})
    if not isinstance(population, dict):
        raise ValueError(f"{path}: [population] must be a table")
    return Taste(name=str(data.get("name", path.stem)),
                 description=str(data.get("description", "")),
                 weights=_check_weights(data.get("taste", {}), str(path)),
                 population=population, path=path)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def mean_approval(logit: np.ndarray, sd, lapse: float) -> np.ndarray:
    """Return E[(1 - lapse) sigmoid(logit + e) + lapse / 2], e ~ Normal(0, sd); sd is a
    number or one per logit."""
    logit = np.asarray(logit, float)
    sd = np.broadcast_to(np.asarray(sd, float), logit.shape)
    nodes, weights = np.polynomial.hermite_e.hermegauss(HERMITE_NODES)
    p = sigmoid(logit[..., None] + sd[..., None] * nodes) @ (weights / weights.sum())
    return (1.0 - lapse) * p + lapse / 2


def spread_sd(basis: np.ndarray, taste_sd: float, leniency_sd: float) -> np.ndarray:
    """Return each pair's sd of logit_u across voters (basis: PairJudge.basis rows)."""
    return np.sqrt(leniency_sd ** 2 + taste_sd ** 2 * (np.asarray(basis) ** 2).sum(axis=-1))


class PairJudge:
    """A taste applied to one build: the logit of any (query, match) pair of its images."""

    def __init__(self, taste: Taste, build: BuildDir):
        self.taste, self.build = taste, build
        ids = [i for i, image in build.images.items() if image.thumbnail]
        self.row = {image_id: i for i, image_id in enumerate(ids)}
        self.category = np.array([build.images[i].category for i in ids])
        self.item = np.array([build.images[i].item_id for i in ids])
        needs_pixels = any(taste.weights[f] for f in FEATURES)
        self.appearance: Appearance | None = (
            describe([build.thumbnail_path(i) for i in ids]) if needs_pixels else None)
        self.means: dict[str, float] = {}

    def add_images(self, ids: list[str], categories: list[str], paths: list[Path]) -> None:
        """Let the taste judge images outside the build too (a visitor's photos, as the
        garment looks), each with its category and no item id."""
        first = len(self.row)
        self.row.update({image_id: first + j for j, image_id in enumerate(ids)})
        self.category = np.concatenate([self.category, np.array(categories)])
        self.item = np.concatenate([self.item, np.array([""] * len(ids))])
        if self.appearance is not None:
            extra = describe(list(paths))
            self.appearance = Appearance(
                *(np.concatenate([getattr(self.appearance, f), getattr(extra, f)])
                  for f in ("tone", "silhouette", "texture", "colour")))

    def features(self, query_ids, match_ids) -> dict[str, np.ndarray]:
        """Return every weighted feature of the pairs, each an array in [0, 1]."""
        qi = np.array([self.row[q] for q in query_ids], dtype=np.int64)
        mi = np.array([self.row[m] for m in match_ids], dtype=np.int64)
        out = {"category": (self.category[qi] == self.category[mi]).astype(float),
               "item": ((self.item[qi] == self.item[mi]) & (self.item[qi] != "")).astype(float)}
        if self.appearance is not None:
            out |= similarities(self.appearance, qi, mi)
        return out

    def centre(self, query_ids, match_ids) -> None:
        """Set each feature's mean m_k over these pairs (the build's), around which
        voters' weights spread."""
        feats = self.features(query_ids, match_ids)
        self.means = {k: float(np.mean(v)) if len(v) else 0.0 for k, v in feats.items()}

    def basis(self, query_ids, match_ids) -> np.ndarray:
        """Return (pairs, SPREAD) rows |w_k| (s_k - m_k), k in SPREAD: a voter's z_u . row
        times taste_sd is how far its logit is from the taste's."""
        w, feats = self.taste.weights, self.features(query_ids, match_ids)
        out = np.zeros((len(query_ids), len(SPREAD)))
        for j, key in enumerate(SPREAD):
            if w[key] and key in feats:
                out[:, j] = abs(w[key]) * (feats[key] - self.means.get(key, 0.0))
        return out

    def logits(self, query_ids, match_ids) -> np.ndarray:
        """Return the taste's logit (before leniency and lapse) for each pair."""
        w = self.taste.weights
        feats = self.features(query_ids, match_ids)
        out = np.full(len(query_ids), w["bias"])
        for key, value in feats.items():
            if w[key]:
                out = out + w[key] * value
        return out
