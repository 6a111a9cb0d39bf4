"""Statistics the engine's rooms share: the crowd's campaign plans and the retrain's
choice of parent both rank variants by a Wilson interval; the builder's fixed samples
(Hamming medians, the exact check, IVF training, the fashion head) come from
`seeded_sample`."""

from __future__ import annotations

import math

import numpy as np

Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Return the Wilson score interval of successes/n; (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def seeded_sample(n: int, size: int, seed: int) -> np.ndarray:
    """Return positions 0..n-1: all of them when n <= size, else a seeded random `size`
    of them, in order (the same for every caller with the same seed)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
