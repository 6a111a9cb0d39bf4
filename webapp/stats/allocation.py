"""Which pair next: a mixture of three rules, each pair drawn with a known probability.

- `control` (share DOPE_CONTROL_SHARE): a random pair of the random control. It is
  negative gold and never chosen by the adaptive rule.
- of the rest, a share DOPE_ADAPTIVE_SHARE is `adaptive`: a top-two rule for
  epsilon-best identification. The newest fit names the leader (the best weighted
  estimate) and weighs each comparison with it that is not yet settled by how hard
  it is (standings.Standing.focus); the rule draws a (leader, challenger) pair by
  those weights, a query where the two return different matches, uniformly, then
  the leader's or the challenger's pair, even odds (top-two's beta = 1/2). Before
  any fit every ordered pair of real variants is as likely. docs/statistics.md says
  how it stands to top-two Thompson sampling and EB-TCe, tried first;
- the rest is `uniform`: a real variant uniformly, then one of its queries uniformly.

Every cell (image pair) therefore has a probability of being drawn, the sum over the
rules of share x the rule's probability of it, computed once per allocation. The
served pair records its rule and that probability; the estimates weight each
judgment by its inverse (docs/statistics.md). A voter is never shown an image pair
twice: draws of cells the voter has seen are drawn again (rejection), which leaves
the other cells' probabilities in proportion; the recorded probability is the
allocation's, before that exclusion.
"""

from __future__ import annotations

import bisect
import itertools
import random
from dataclasses import dataclass, field

from webapp.stats.design import CONTROL, REAL, Design

# "gold": a voter's first pairs are drawn from the random control with
# DOPE_GOLD_FIRST_SHARE each (gold_allocation): evidence of whether the voter looks
# (webapp.stats.looking); outside the mixture, so never in the estimates.
UNIFORM, ADAPTIVE, CONTROL_RULE, GOLD_RULE = "uniform", "adaptive", "control", "gold"
REJECTION_TRIES = 16


@dataclass
class Rule:
    """One rule of the mixture: its share and its draws as a cumulative table."""

    reason: str
    share: float
    # Each outcome is a cell with the variant whose pair serves it.
    outcomes: list[tuple[int, int]] = field(default_factory=list)  # (variant pos, cell)
    cumulative: list[float] = field(default_factory=list)

    def add(self, variant: int, cell: int, probability: float) -> None:
        if probability > 0:
            self.outcomes.append((variant, cell))
            self.cumulative.append((self.cumulative[-1] if self.cumulative else 0.0)
                                   + probability)

    def draw(self, rng) -> tuple[int, int]:
        u = rng.random() * self.cumulative[-1]
        return self.outcomes[min(bisect.bisect_right(self.cumulative, u),
                                 len(self.outcomes) - 1)]


@dataclass
class Allocation:
    """The mixture, and each cell's probability of being drawn under it."""

    design: Design
    rules: list[Rule]
    probability: list[float]  # per cell

    def draw(self, rng=random) -> tuple[str, int, int]:
        """Return (reason, variant position, cell) of one draw."""
        u, total = rng.random(), 0.0
        for rule in self.rules:
            total += rule.share
            if u < total:
                break
        return (rule.reason, *rule.draw(rng))

    def draw_fresh(self, seen, rng=random) -> tuple[str, int, int] | None:
        """Return a draw whose cell (query image, match image) is not in `seen`; None
        when every cell with a probability is seen. Rejection first; for a voter who
        has seen most cells, a draw in proportion among the cells left."""
        cells = self.design.cells
        if not self.rules:
            return None
        for _ in range(REJECTION_TRIES):
            reason, variant, cell = self.draw(rng)
            if cells[cell] not in seen:
                return reason, variant, cell
        left = [(rule, k) for rule in self.rules for k, (_, cell) in enumerate(rule.outcomes)
                if cells[cell] not in seen]
        if not left:
            return None
        weights = [rule.share * _mass(rule, k) / rule.cumulative[-1] for rule, k in left]
        rule, k = rng.choices(left, weights=weights)[0]
        return (rule.reason, *rule.outcomes[k])


def _mass(rule: Rule, k: int) -> float:
    return rule.cumulative[k] - (rule.cumulative[k - 1] if k else 0.0)


def adaptive_rule(design: Design, share: float,
                  focus: dict[tuple[int, int], float] | None) -> Rule:
    """The top-two rule over (leader, challenger) pairs of design positions with their
    weights (the fit's; None: every ordered pair of real variants alike). Pairs that
    return the same match for every shared query have nothing to compare and drop out."""
    rule = Rule(ADAPTIVE, share)
    real = design.real()
    if not focus:
        focus = {(i, j): 1.0 for i, j in itertools.permutations(real, 2)}
    usable = {}
    for (i, j), weight in focus.items():
        ranked = i in real and j in real  # never the control, never gold
        queries = design.differing(i, j) if weight > 0 and ranked else []
        if queries:
            usable[(i, j)] = (weight, queries)
    total = sum(w for w, _ in usable.values())
    for (i, j), (weight, queries) in usable.items():
        # Even odds between the two (top-two's beta = 1/2: on the tuning seeds a leader
        # share of 1 / (1 + sqrt(challengers)) did no better).
        each = weight / total / len(queries) / 2
        for q in queries:
            rule.add(i, design.by_variant[i][q], each)
            rule.add(j, design.by_variant[j][q], each)
    return rule


def pooled_rule(design: Design, reason: str, kind: str, share: float) -> Rule:
    """A variant of one kind uniformly, then one of its queries uniformly: the control
    rule (kind CONTROL) and the uniform one (kind REAL)."""
    rule = Rule(reason, share)
    members = [i for i in design.of_kind(kind) if design.by_variant[i]]
    for i in members:
        queries = design.by_variant[i]
        for cell in queries.values():
            rule.add(i, cell, 1.0 / (len(members) * len(queries)))
    return rule


def make_allocation(design: Design, *, control_share: float, adaptive_share: float,
                    focus: dict[tuple[int, int], float] | None = None) -> Allocation:
    """Return the mixture for these shares. A rule with nothing to draw gives its share
    to the others, in proportion."""
    real_share = max(0.0, 1.0 - control_share)
    rules = [pooled_rule(design, CONTROL_RULE, CONTROL, control_share),
             adaptive_rule(design, real_share * adaptive_share, focus),
             pooled_rule(design, UNIFORM, REAL, real_share * (1.0 - adaptive_share))]
    return _mixture(design, rules)


def gold_allocation(design: Design) -> Allocation:
    """The warm-up draw for a voter's first pairs: a random-control pair no real variant
    also returns, uniformly (a control variant, then one of those queries). Negative
    gold: its votes say whether the voter looks at the pictures; they never enter the
    estimates. A pair a real variant returns too is not gold (exclusion.negative_gold)."""
    real = {cell for i in design.real() for cell in design.by_variant[i].values()}
    members = [(i, [c for c in design.by_variant[i].values() if c not in real])
               for i in design.of_kind(CONTROL)]
    members = [(i, cells) for i, cells in members if cells]
    rule = Rule(GOLD_RULE, 1.0)
    for i, cells in members:
        for cell in cells:
            rule.add(i, cell, 1.0 / (len(members) * len(cells)))
    return _mixture(design, [rule])


def _mixture(design: Design, rules: list[Rule]) -> Allocation:
    """The rules with outcomes and a share, their shares scaled to 1, and each cell's
    probability under them."""
    rules = [r for r in rules if r.outcomes and r.share > 0]
    total = sum(r.share for r in rules)
    probability = [0.0] * len(design.cells)
    if not rules:
        return Allocation(design, [], probability)
    for rule in rules:
        rule.share /= total
        for k, (_, cell) in enumerate(rule.outcomes):
            probability[cell] += rule.share * _mass(rule, k) / rule.cumulative[-1]
    return Allocation(design, rules, probability)
