"""The variance process clustered by voter: honest intervals when votes are not independent.

One person's judgments share that person's taste and leniency, so they are not
independent draws from the crowd: a heavy voter who likes dark matches moves every
estimate that counts their votes, all in one direction. The confidence sequences'
variance process then has to count a voter's terms together. For a weight vector w, with
the epoch weights h and the terms Z_t of webapp.stats.estimates,

    V = sum over voters u of ( sum_{t of u} h_t (Z_t - mean) )^2,

the cluster-robust (sandwich) variance of Liang and Zeger (1986) applied to the centred
martingale sum, in place of sum_t h_t^2 (Z_t - mean)^2. With one judgment per voter it is
the plain one. Regrouped by voter, the sum is a sum of voters' contributions, and the
normal mixture runs on that sum (webapp.stats.confseq); docs/statistics.md says what is
assumed and bench/coverage.py measures how often the intervals miss.

Per voter and vector we keep a_u = sum h y w/pi, p_u = sum h w/pi and n_u = sum h, so that
sum_{t of u} h_t (Z_t - mean) = s (a_u - b p_u) + c n_u, with s = +-1 (the vector or its
negation) and c = b * total - mean, and V is a quadratic form in (1, b, c) of six sums over
voters (kept lazily: votes come one at a time in the simulations, by the million in a fit).

A clustered variance is only as good as the number of voters behind it: while a few
people cast most of the votes, one or two of them decide it. So no interval is given
(it is infinite) until the judgments' effective number of voters, (sum n_u)^2 / sum
n_u^2 over their judgment counts, reaches MIN_EFFECTIVE_VOTERS; and the clustered
variance never goes below the independent one (webapp.stats.estimates.sums_interval).
"""

from __future__ import annotations

import numpy as np

MIN_EFFECTIVE_VOTERS = 20


class VoterSums:
    """Per voter and per vector: a_u, p_u and n_u; V for any baseline and mean."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = matrix  # (vectors, cells): every vector's weight on every cell
        self.touched = (matrix != 0).any(axis=0)  # cells some vector weighs
        self.index: dict = {}
        self.next_row = 0
        self.a = np.zeros((16, len(matrix)))
        self.p = np.zeros_like(self.a)
        self.n = np.zeros_like(self.a)
        self.count = np.zeros(len(self.a))
        self._moments: np.ndarray | None = None

    def _rows(self, voters) -> np.ndarray:
        """Each voter's row: integer arrays (the fit numbers its voters) are their own
        rows; any other voter id gets the next free row (ints map to the same rows)."""
        if isinstance(voters, np.ndarray) and voters.dtype.kind in "iu":
            rows = voters.astype(np.int64)
            for v in np.unique(rows).tolist():
                self.index[v] = v
            self.next_row = max(self.next_row, int(rows.max()) + 1 if len(rows) else 0)
        else:
            rows = np.array([self._row_of(v) for v in voters], dtype=np.int64)
        size = self.next_row
        if size > len(self.a):
            grow = max(size, 2 * len(self.a)) - len(self.a)
            self.a, self.p, self.n = (np.vstack([x, np.zeros((grow, x.shape[1]))])
                                      for x in (self.a, self.p, self.n))
            self.count = np.concatenate([self.count, np.zeros(grow)])
        return rows

    def _row_of(self, voter) -> int:
        if voter not in self.index:
            self.index[voter] = self.next_row
            self.next_row += 1
        return self.index[voter]

    def add(self, voter, cell: int, dope: bool, probability: float, h: np.ndarray) -> None:
        """Count one judgment; h: each vector's epoch weight."""
        row = self._rows([voter])[0]
        hw = h * self.matrix[:, cell] / probability
        self.p[row] += hw
        if dope:
            self.a[row] += hw
        self.n[row] += h
        self.count[row] += 1
        self._moments = None

    def add_many(self, voters: np.ndarray, cell: np.ndarray, dope: np.ndarray,
                 probability: np.ndarray, h: np.ndarray, weight: np.ndarray | None = None) -> None:
        """Count judgments given as arrays, all drawn with the epoch weights h, each
        weighted by its voter's omega (1 when None)."""
        if not len(cell):
            return
        rows, local = np.unique(self._rows(voters), return_inverse=True)
        omega = np.ones(len(cell)) if weight is None else np.asarray(weight, float)
        count = np.bincount(local, weights=omega, minlength=len(rows))
        self.count[rows] += np.bincount(local, minlength=len(rows))
        self.n[rows] += count[:, None] * h[None, :]
        some = self.touched[cell]  # judgments of cells no vector weighs add to n only
        local, cell, dope = local[some], cell[some], dope[some]
        inv = omega[some] / probability[some]
        for k in range(len(self.matrix)):  # the voters of this batch only: cost ~ batch
            hw = h[k] * self.matrix[k, cell] * inv
            self.p[rows, k] += np.bincount(local, weights=hw, minlength=len(rows))
            self.a[rows, k] += np.bincount(local, weights=hw * dope, minlength=len(rows))
        self._moments = None

    def moments(self) -> np.ndarray:
        """(6, vectors): sums over voters of a^2, p^2, n^2, a p, a n, p n."""
        if self._moments is None:
            a, p, n = self.a, self.p, self.n
            self._moments = np.array([(a * a).sum(0), (p * p).sum(0), (n * n).sum(0),
                                      (a * p).sum(0), (a * n).sum(0), (p * n).sum(0)])
        return self._moments

    def variance(self, k: int, sign: float, b: float, mean: float, total: float) -> float:
        """V for vector k (sign -1: its negation) with baseline b, at `mean`; infinite
        below MIN_EFFECTIVE_VOTERS effective voters."""
        if self.effective_voters() < MIN_EFFECTIVE_VOTERS:
            return float("inf")
        aa, pp, nn, ap, an, pn = self.moments()[:, k]
        c = b * total - mean
        v = aa + b * b * pp - 2 * b * ap + c * c * nn + 2 * sign * c * (an - b * pn)
        return max(float(v), 0.0)

    @property
    def voters(self) -> int:
        return int((self.count > 0).sum())

    def effective_voters(self) -> float:
        """(sum n_u)^2 / sum n_u^2: how many equally active voters the judgments are worth."""
        squares = float((self.count ** 2).sum())
        return float(self.count.sum()) ** 2 / squares if squares else 0.0
