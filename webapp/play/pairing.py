"""Choose the next pair for a voter.

The pair comes from the allocation (webapp/stats/allocation.py): the random control with
probability DOPE_CONTROL_SHARE, otherwise adaptive (the top-two rule on the newest
fit's leader and challenger) with DOPE_ADAPTIVE_SHARE, else uniform. It is an
image pair (query image, match image) the voter has never been shown under any
variant; the served pair's rule and probability are stored with its token. Every
variant that returns that image pair for that query is credited with the vote
(pooling, docs/statistics.md). Each of a voter's first DOPE_GOLD_FIRST_PAIRS pairs is,
with DOPE_GOLD_FIRST_SHARE, a warm-up random-control pair instead (reason "gold",
outside the mixture: webapp.stats.looking weighs voters by it).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app

from webapp.jobs.fit_store import StoredFit
from webapp.models import Build, FitResult, Image, IssuedToken, Pair, Variant
from webapp.play import fastsql
from webapp.stats.allocation import Allocation, gold_allocation, make_allocation
from webapp.stats.design import CONTROL, REAL, Design, build_design


class Chosen(NamedTuple):
    """The pair to serve: its id, the two image files (nothing about the variant), the
    rule that chose it and the probability the allocation gave its image pair."""

    id: int
    query_file: str
    match_file: str
    reason: str
    probability: float
    fit_id: int | None  # the fit whose allocation drew it (its epoch)


# Built once, compiled once per dialect, run on the DB-API connection (fastsql).
# Variant rows: (id, control, MAX(pair.id), MAX(build.id), MAX(fit_result.id)). Pairs
# and builds are only ever added (by import-build), never changed or deleted, so the
# middle two name the pair table's content: an import that adds pairs raises them.
# The last names the newest fit, whose probabilities of being best steer the
# adaptive rule.
_VARIANT_ROWS = (Variant.id, sa.cast(Variant.control, sa.Integer),
                 sa.select(sa.func.max(Pair.id)).scalar_subquery(),
                 sa.select(sa.func.max(Build.id)).scalar_subquery(),
                 sa.select(sa.func.max(FitResult.id)).scalar_subquery())
# Everything a pair request reads, in one statement (one snapshot, one round trip),
# each row tagged by its first column:
#   VARIANT: a variant row as above;
#   TOTAL:   how many tokens the voter holds;
#   SHOWN:   (token id, variant, query image, match image) of each token after b_after.
VARIANT, TOTAL, SHOWN = 0, 1, 2
_VOTER = sa.bindparam("b_voter", type_=sa.String())
_STATE = fastsql.Prepared(sa.union_all(
    sa.select(sa.literal(VARIANT), *_VARIANT_ROWS),
    sa.select(sa.literal(TOTAL), sa.func.count(IssuedToken.id), sa.null(), sa.null(), sa.null(),
              sa.null())
    .where(IssuedToken.voter_id == _VOTER),
    sa.select(sa.literal(SHOWN), IssuedToken.id, Pair.variant_id, Pair.query_id, Pair.match_id,
              sa.null())
    .join(Pair, Pair.id == IssuedToken.pair_id)
    .where(IssuedToken.voter_id == _VOTER,
           IssuedToken.id > sa.bindparam("b_after", type_=sa.Integer()))))
SEEN_VOTERS_KEPT = 1024  # per worker
SEEN_TOKENS_KEPT = 200_000  # per worker, all voters together (~60 MB at most)
_QUERY_IMAGE, _MATCH_IMAGE = so.aliased(Image), so.aliased(Image)
_ALL_PAIRS = fastsql.Prepared(
    sa.select(Pair.id, Pair.variant_id, Pair.query_id, Pair.match_id, _QUERY_IMAGE.file,
              _MATCH_IMAGE.file)
    .join(_QUERY_IMAGE, _QUERY_IMAGE.id == Pair.query_id)
    .join(_MATCH_IMAGE, _MATCH_IMAGE.id == Pair.match_id)
    .where(Pair.rank == 1)
    .order_by(Pair.id))
_FIT_BODY = fastsql.Prepared(sa.select(FitResult.body).where(
    FitResult.id == sa.bindparam("b_fit", type_=sa.Integer())))


class Seen:
    """What one voter has been shown: every (query image, match image), from `count`
    tokens, the newest read being `last_id`."""

    __slots__ = ("count", "last_id", "images")

    def __init__(self):
        self.count, self.last_id, self.images = 0, 0, set()

    def add(self, rows) -> None:
        for token_id, _variant_id, query_id, match_id in rows:
            self.images.add((query_id, match_id))
            self.last_id = max(self.last_id, token_id)
        self.count += len(rows)


def _read_state(voter_id: str, after: int) -> tuple[list, int, list]:
    """Return (variant rows, the voter's token count, its tokens after `after`)."""
    variants, total, shown = [], 0, []
    for row in _STATE.execute(fastsql.connection(), {"b_voter": voter_id, "b_after": after}):
        if row[0] == VARIANT:
            variants.append(row[1:])
        elif row[0] == SHOWN:
            shown.append(row[1:5])
        else:
            total = row[1]
    return variants, total, shown


def seen_by(voter_id: str) -> tuple[Seen, list]:
    """Return what this voter has been shown, kept per worker and brought up to date,
    and the variant rows read in the same statement.

    Each worker remembers the last SEEN_VOTERS_KEPT voters it served, and no more
    than SEEN_TOKENS_KEPT of their tokens in all (voters with huge histories cannot
    fill its memory), and reads only the tokens issued since (by any worker). The
    voter's token count, read in the same statement, proves nothing else changed: a
    token committed out of id order (PostgreSQL) or a deleted one makes the counts
    disagree, and the voter's whole history is read again.
    """
    memo = current_app.extensions.setdefault("dope_seen", OrderedDict())
    seen = memo.pop(voter_id, None)  # a request has it to itself, then puts it back
    held = current_app.extensions.get("dope_seen_tokens", 0) - (seen.count if seen else 0)
    if seen is not None:
        variants, total, rows = _read_state(voter_id, seen.last_id)
        if total == seen.count + len(rows):
            seen.add(rows)
        else:
            seen = None
    if seen is None:
        seen = Seen()
        variants, total, rows = _read_state(voter_id, 0)
        seen.add(rows)
    memo[voter_id] = seen
    held += seen.count
    if held > SEEN_TOKENS_KEPT:  # count exactly (threads may have raced the running sum)
        held = sum(s.count for s in list(memo.values()))
    while len(memo) > 1 and (len(memo) > SEEN_VOTERS_KEPT or held > SEEN_TOKENS_KEPT):
        held -= memo.popitem(last=False)[1].count
    current_app.extensions["dope_seen_tokens"] = max(held, 0)
    return seen, variants


@dataclass
class Game:
    """A worker's view of what can be served: the design, each cell's two image files,
    and the allocation for the newest fit."""

    version: tuple
    design: Design
    files: list[tuple[str, str]]
    gold: Allocation
    fit_id: int | None = None
    allocation: Allocation | None = None


def load_game(variant_rows, version: tuple) -> Game:
    """Read every rank-1 pair once; variant rows as _STATE reads them."""
    rows = _ALL_PAIRS.execute(fastsql.connection()).fetchall()
    design = build_design([(v[0], CONTROL if v[1] else REAL) for v in variant_rows],
                          [r[:4] for r in rows])
    files = [None] * len(design.cells)
    for _, _, query_id, match_id, query_file, match_file in rows:
        cell = design.cell_index.get((query_id, match_id))
        if cell is not None and files[cell] is None:
            files[cell] = (query_file, match_file)
    return Game(version, design, files, gold_allocation(design))


def fit_focus(fit_id: int | None, design: Design) -> dict[tuple[int, int], float] | None:
    """Return the newest fit's (leader, challenger) weights in design positions; None
    without a fit or when it names a variant this design does not have."""
    if fit_id is None:
        return None
    row = _FIT_BODY.execute(fastsql.connection(), {"b_fit": fit_id}).fetchone()
    return StoredFit.parse(row[0] if row else None).focus(design.position)


def current_game(variant_rows) -> Game:
    """Return this worker's game, read again when pairs were added, its allocation
    made again when a newer fit exists."""
    version = tuple(variant_rows[0][2:4]) if variant_rows else ()
    fit_id = variant_rows[0][4] if variant_rows else None
    game = current_app.extensions.get("dope_game")
    if game is None or game.version != version:
        game = current_app.extensions["dope_game"] = load_game(variant_rows, version)
    if game.allocation is None or game.fit_id != fit_id:
        config = current_app.config
        allocation = make_allocation(
            game.design, control_share=config["DOPE_CONTROL_SHARE"],
            adaptive_share=config["DOPE_ADAPTIVE_SHARE"],
            focus=fit_focus(fit_id, game.design))
        game.allocation, game.fit_id = allocation, fit_id
    return game


def next_pair(state: tuple[Seen, list], rng=random) -> Chosen | None:
    """Return the next pair to show a voter, or None when none is left.

    `state` is seen_by(voter_id): what the voter has been shown, and the variant rows.
    """
    seen, rows = state
    game = current_game(rows)
    config = current_app.config
    allocation, drawn = game.allocation, None
    if seen.count < config["DOPE_GOLD_FIRST_PAIRS"] and \
            rng.random() < config["DOPE_GOLD_FIRST_SHARE"]:
        allocation = game.gold  # a warm-up pair (webapp.stats.allocation.gold_allocation)
        drawn = allocation.draw_fresh(seen.images, rng)
    if drawn is None:
        allocation = game.allocation
        drawn = allocation.draw_fresh(seen.images, rng)
    if drawn is None:
        return None
    reason, variant, cell = drawn
    query_file, match_file = game.files[cell]
    return Chosen(game.design.pair_ids[(variant, cell)], query_file, match_file, reason,
                  allocation.probability[cell], game.fit_id)
