"""White-box appearance descriptors of product images: what a person sees at a glance.

Computed from the pixels alone (the build's thumbnails, as voters see them), never
from a network. Each image is reduced to a WORK x WORK grey and colour picture; the
garment is the set of pixels that differ from the background, estimated from the
border. Per image:

- `tone`: the garment's mean darkness, 0 (white) to 1 (black);
- `silhouette`: the garment mask on a 16 x 16 grid (shape);
- `texture`: a histogram of the garment's gradients, 4 orientations x 3 strengths
  plus one bin for flat pixels (plain, striped, checked, busy...);
- `colour`: a histogram of the garment's hues over 12 bins for saturated pixels plus
  one bin for grey ones (every pixel of a greyscale catalog falls in the grey bin).

`similarities` turns two images' descriptors into five numbers in [0, 1], 1 meaning
alike; `engine.crowd.simulate` tastes weigh them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from engine.builder.whitebox import garment_mask

WORK = 64
GRID = 16
ORIENTATIONS, STRENGTHS = 4, 3
STRENGTH_EDGES = (0.04, 0.12, 0.30)  # gradient magnitude (intensity per pixel) per bin
HUES = 12
GREY_SATURATION = 0.15
TONE_SCALE = 0.15  # tone similarity exp(-|difference| / TONE_SCALE)
FEATURES = ("tone", "shape", "texture", "colour")


@dataclass
class Appearance:
    """Descriptors of N images, row i for image i."""

    tone: np.ndarray  # (N,)
    silhouette: np.ndarray  # (N, GRID*GRID) bool
    texture: np.ndarray  # (N, ORIENTATIONS*STRENGTHS + 1), rows sum to 1
    colour: np.ndarray  # (N, HUES + 1), rows sum to 1


def _load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return (grey, rgb) arrays in [0, 1] at WORK x WORK."""
    with Image.open(path) as img:
        rgb = img.convert("RGB").resize((WORK, WORK), Image.Resampling.BILINEAR)
    rgb_arr = np.asarray(rgb, np.float32) / 255.0
    grey = rgb_arr @ np.array([0.299, 0.587, 0.114], np.float32)
    return grey, rgb_arr


def _texture(grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)[mask]
    angle = np.mod(np.arctan2(gy, gx), np.pi)[mask]
    orientation = np.minimum((angle / np.pi * ORIENTATIONS).astype(int), ORIENTATIONS - 1)
    strength = np.searchsorted(STRENGTH_EDGES, magnitude, side="right") - 1
    hist = np.zeros(ORIENTATIONS * STRENGTHS + 1)
    flat = strength < 0
    hist[-1] = flat.sum()
    np.add.at(hist, orientation[~flat] * STRENGTHS + strength[~flat], 1)
    return hist / max(hist.sum(), 1)


def _colour(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hsv = np.asarray(Image.fromarray((rgb * 255).astype(np.uint8)).convert("HSV"),
                     np.float32)[mask] / 255.0
    saturated = (hsv[:, 1] > GREY_SATURATION) & (hsv[:, 2] > 0.1)
    hist = np.zeros(HUES + 1)
    hist[-1] = (~saturated).sum()
    hue_bin = np.minimum((hsv[saturated, 0] * HUES).astype(int), HUES - 1)
    np.add.at(hist, hue_bin, 1)
    return hist / max(hist.sum(), 1)


def describe_image(path: Path) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Return (tone, silhouette, texture, colour) of one image file."""
    grey, rgb = _load(path)
    mask = garment_mask(grey)
    tone = float(1.0 - grey[mask].mean())
    cells = mask.reshape(GRID, WORK // GRID, GRID, WORK // GRID).mean(axis=(1, 3)) > 0.5
    return tone, cells.ravel(), _texture(grey, mask), _colour(rgb, mask)


def describe(paths: list[Path]) -> Appearance:
    """Return the descriptors of every image file, in order."""
    parts = [describe_image(p) for p in paths]
    if not parts:
        return Appearance(np.zeros(0), np.zeros((0, GRID * GRID), bool),
                          np.zeros((0, ORIENTATIONS * STRENGTHS + 1)), np.zeros((0, HUES + 1)))
    tone, silhouette, texture, colour = zip(*parts, strict=True)
    return Appearance(np.array(tone), np.stack(silhouette), np.stack(texture), np.stack(colour))


def similarities(a: Appearance, qi: np.ndarray, mi: np.ndarray) -> dict[str, np.ndarray]:
    """Return each feature's similarity in [0, 1] between rows qi and rows mi."""
    inter = (a.silhouette[qi] & a.silhouette[mi]).sum(axis=1)
    union = (a.silhouette[qi] | a.silhouette[mi]).sum(axis=1)
    return {
        "tone": np.exp(-np.abs(a.tone[qi] - a.tone[mi]) / TONE_SCALE),
        "shape": inter / np.maximum(union, 1),
        "texture": 1.0 - 0.5 * np.abs(a.texture[qi] - a.texture[mi]).sum(axis=1),
        "colour": 1.0 - 0.5 * np.abs(a.colour[qi] - a.colour[mi]).sum(axis=1),
    }
