"""White-box feature families for retraining (engine.retrain.model), from images: the
build's rows, a fresh pool's queries, and the query service's photos.

The consumer-to-shop article's hand-made features, beside the CNN layers:
- `intensity`: a 16-bin histogram of the garment's grey levels;
- `gradient`: a histogram of oriented gradients, 2 x 2 cells x 8 orientations,
  magnitude-weighted and normalised (HOG-like);
- `profile`: the garment mask's width per row and height per column, 32 of each
  (a silhouette descriptor that tolerates small shifts);
- `colour`: a hue histogram (8 hues x 2 saturations, plus grey);
- `lbp`: a histogram of local binary patterns (8 neighbours at radius 1, the 9
  rotation-invariant uniform codes plus one for the rest; Ojala et al.'s texture
  descriptor) over the garment;
- `edges`: a histogram of gradient magnitudes over the garment, 8 log-spaced bins
  (how much of the surface is plain, lightly or strongly patterned).

These deliberately differ from the simulated crowd's descriptors
(engine.crowd.descriptors): a retrained variant has to learn what voters look at from
votes, not read the crowd's own eye. Each family's distance is L1 between rows.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

WORK = 64
FAMILIES = ("intensity", "gradient", "profile", "colour", "lbp", "edges")
KEY_PREFIX = "whitebox."  # a family's feature key: whitebox.<family> (files, photo records)
EDGE_BINS = np.concatenate([[0.0], np.geomspace(0.005, 0.5, 7), [np.inf]])
# The 8 neighbours of a pixel, clockwise from the top-left, as (row, column) offsets.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


def garment_mask(grey: np.ndarray) -> np.ndarray:
    """Return the pixels that differ from the background (the border's median grey)."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    mask = np.abs(grey - np.median(border)) > 0.08
    return mask if mask.any() else np.ones_like(mask)


def _grey_rgb(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(img.convert("RGB").resize((WORK, WORK), Image.Resampling.BILINEAR),
                     np.float32) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32), rgb


def _intensity(grey, mask) -> np.ndarray:
    hist = np.histogram(grey[mask], bins=16, range=(0.0, 1.0))[0].astype(np.float32)
    return hist / max(hist.sum(), 1)


def _gradient(grey, mask) -> np.ndarray:
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy) * mask
    orientation = np.minimum((np.mod(np.arctan2(gy, gx), np.pi) / np.pi * 8).astype(int), 7)
    half = WORK // 2
    cells = []
    for y in (0, half):
        for x in (0, half):
            m, o = magnitude[y:y + half, x:x + half], orientation[y:y + half, x:x + half]
            cells.append(np.bincount(o.ravel(), weights=m.ravel(), minlength=8))
    hist = np.concatenate(cells).astype(np.float32)
    return hist / max(hist.sum(), 1e-6)


def _profile(mask) -> np.ndarray:
    rows = mask.reshape(32, 2, WORK).mean(axis=(1, 2))
    cols = mask.reshape(WORK, 32, 2).mean(axis=(0, 2))
    return np.concatenate([rows, cols]).astype(np.float32) / 2


def _colour(rgb, mask) -> np.ndarray:
    hsv = np.asarray(Image.fromarray((rgb * 255).astype(np.uint8)).convert("HSV"),
                     np.float32)[mask] / 255.0
    grey = hsv[:, 1] < 0.15
    hue = np.minimum((hsv[~grey, 0] * 8).astype(int), 7)
    strong = (hsv[~grey, 1] > 0.5).astype(int)
    hist = np.bincount(hue * 2 + strong, minlength=16).astype(np.float32)
    hist = np.append(hist, grey.sum())
    return hist / max(hist.sum(), 1)


def _lbp(grey, mask) -> np.ndarray:
    centre = grey[1:-1, 1:-1]
    bits = np.stack([grey[1 + dy: WORK - 1 + dy, 1 + dx: WORK - 1 + dx] >= centre
                     for dy, dx in NEIGHBOURS]).astype(int)
    ones = bits.sum(axis=0)
    transitions = np.abs(np.diff(np.concatenate([bits, bits[:1]]), axis=0)).sum(axis=0)
    codes = np.where(transitions <= 2, ones, 9)[mask[1:-1, 1:-1]]
    hist = np.bincount(codes, minlength=10).astype(np.float32)
    return hist / max(hist.sum(), 1)


def _edges(grey, mask) -> np.ndarray:
    gy, gx = np.gradient(grey)
    hist = np.histogram(np.hypot(gx, gy)[mask], bins=EDGE_BINS)[0].astype(np.float32)
    return hist / max(hist.sum(), 1)


def whitebox_row(img: Image.Image) -> dict[str, np.ndarray]:
    """Return every family's descriptor of one image."""
    grey, rgb = _grey_rgb(img)
    mask = garment_mask(grey)
    return {"intensity": _intensity(grey, mask), "gradient": _gradient(grey, mask),
            "profile": _profile(mask), "colour": _colour(rgb, mask),
            "lbp": _lbp(grey, mask), "edges": _edges(grey, mask)}


def whitebox_features(images) -> dict[str, np.ndarray]:
    """Return {family: (N, d) float32} for a sequence of PIL images."""
    rows = [whitebox_row(img) for img in images]
    return {f: np.stack([r[f] for r in rows]) if rows else np.zeros((0, 1), np.float32)
            for f in FAMILIES}


def family_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Return the L1 distance between matching rows of a and b."""
    return np.abs(a - b).sum(axis=1)


def family_lengths() -> dict[str, int]:
    """Return each family's row length (they do not depend on the image)."""
    return {f: len(row) for f, row in whitebox_row(Image.new("L", (WORK, WORK))).items()}
