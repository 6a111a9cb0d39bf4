"""The experiment's design: which image pair each variant shows for each query.

A *cell* is one image pair (query image, match image). A vote judges a cell, and
counts for every variant that returns that cell for that query (pooling,
docs/statistics.md). Pure data and functions: no database, no Flask, so the fit
(webapp/jobs/fit.py), the pair choice (webapp/play/pairing.py) and the offline simulations
(bench/allocation.py) share one definition.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REAL, CONTROL = "real", "control"


@dataclass
class Design:
    """Variants (in a fixed order), cells, and each variant's query -> cell map."""

    variant_ids: list[int]
    kinds: list[str]  # REAL or CONTROL, per variant
    cells: list[tuple[int, int]] = field(default_factory=list)
    cell_index: dict[tuple[int, int], int] = field(default_factory=dict)
    by_variant: list[dict[int, int]] = field(default_factory=list)  # query -> cell
    pair_ids: dict[tuple[int, int], int] = field(default_factory=dict)  # (variant, cell) -> pair

    def real(self) -> list[int]:
        """Return the positions of the real variants (ranked; never the control)."""
        return [i for i, k in enumerate(self.kinds) if k == REAL]

    def of_kind(self, kind: str) -> list[int]:
        return [i for i, k in enumerate(self.kinds) if k == kind]

    def position(self, variant_id: int) -> int:
        return self.variant_ids.index(variant_id)

    def differing(self, i: int, j: int) -> list[int]:
        """Return the queries both variants answer, and answer differently."""
        a, b = self.by_variant[i], self.by_variant[j]
        return sorted(q for q in a.keys() & b.keys() if a[q] != b[q])

    def restricted(self, queries: set[int]) -> Design:
        """Return the design over these queries only: the same variants and cells (so
        probabilities and judgments keep their indices), each variant's map cut down."""
        return Design(self.variant_ids, self.kinds, self.cells, self.cell_index,
                      [{q: c for q, c in m.items() if q in queries} for m in self.by_variant],
                      self.pair_ids)

    def shared(self, i: int, j: int) -> int:
        """Return how many queries both variants answer."""
        return len(self.by_variant[i].keys() & self.by_variant[j].keys())


def build_design(variants, pairs) -> Design:
    """Return the design from variant rows (id, kind) and pair rows (pair id, variant id,
    query image id, match image id), rank-1 pairs only. A variant with two pairs for one
    query keeps the first (the import never stores two)."""
    design = Design([v for v, _ in variants], [k for _, k in variants])
    position = {v: i for i, v in enumerate(design.variant_ids)}
    design.by_variant = [{} for _ in design.variant_ids]
    for pair_id, variant_id, query_id, match_id in pairs:
        i = position.get(variant_id)
        if i is None or query_id in design.by_variant[i]:
            continue
        key = (query_id, match_id)
        cell = design.cell_index.get(key)
        if cell is None:
            cell = design.cell_index[key] = len(design.cells)
            design.cells.append(key)
        design.by_variant[i][query_id] = cell
        design.pair_ids[(i, cell)] = pair_id
    return design
