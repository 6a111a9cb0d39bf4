"""Choose the next pair for a voter.

Order: with probability DOPE_CONTROL_SHARE the random control first; otherwise the
real variants from fewest judgments (dope + nope + skip) up, random among ties,
and the control last. Within a variant: a random pair whose query this voter has
not been shown for that variant, and whose (query image, match image) the voter
has not been shown under any variant. When two variants pick the same match for
a query, the voter sees that image pair once and judges it for the first variant
served; the other variant gets that query from other voters.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import NamedTuple

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app

from . import fastsql
from .models import Build, Image, IssuedToken, Pair, Variant


class Chosen(NamedTuple):
    """The pair to serve: its id and the two image files (nothing about the variant)."""

    id: int
    query_file: str
    match_file: str


# Built once, compiled once per dialect, run on the DB-API connection (fastsql).
# Variant rows: (id, control, judgments, MAX(pair.id), MAX(build.id)). Pairs and builds
# are only ever added (by import-build), never changed or deleted, so the last two
# name the pair table's content: an import that adds pairs raises them.
_VARIANT_ROWS = (Variant.id, sa.cast(Variant.control, sa.Integer),
                 Variant.dope_count + Variant.nope_count + Variant.skip_count,
                 sa.select(sa.func.max(Pair.id)).scalar_subquery(),
                 sa.select(sa.func.max(Build.id)).scalar_subquery())
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
RANDOM_TRIES = 16  # random draws from a variant's pairs before listing the fresh ones
_QUERY_IMAGE, _MATCH_IMAGE = so.aliased(Image), so.aliased(Image)
_CANDIDATES = fastsql.Prepared(
    sa.select(Pair.id, Pair.query_id, Pair.match_id, _QUERY_IMAGE.file, _MATCH_IMAGE.file)
    .join(_QUERY_IMAGE, _QUERY_IMAGE.id == Pair.query_id)
    .join(_MATCH_IMAGE, _MATCH_IMAGE.id == Pair.match_id)
    .where(Pair.variant_id == sa.bindparam("b_variant"))
    .order_by(Pair.id))


def variant_order(rows, control_share: float, rng=random) -> list[int]:
    """Return variant ids in the order to try for the next pair, from the variant rows
    (id, control, judgments, ...) that seen_by read."""
    real = [(n, rng.random(), vid) for vid, control, n, *_ in rows if not control]
    controls = [vid for vid, control, *_ in rows if control]
    order = [vid for _, _, vid in sorted(real)]
    if controls and rng.random() < control_share:
        return controls + order
    return order + controls


class Seen:
    """What one voter has been shown: every (variant, query image) and every
    (query image, match image), from `count` tokens, the newest read being `last_id`."""

    __slots__ = ("count", "last_id", "queries", "images")

    def __init__(self):
        self.count, self.last_id, self.queries, self.images = 0, 0, set(), set()

    def add(self, rows) -> None:
        for token_id, variant_id, query_id, match_id in rows:
            self.queries.add((variant_id, query_id))
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


def variant_pairs(variant_id: int, version: tuple) -> list[tuple]:
    """Return (pair id, query image id, match image id, query file, match file) of a
    variant's pairs, cached per worker until the pair table or the newest build changes.
    Image rows are never changed once imported, so their files may ride along."""
    cache = current_app.extensions.get("dope_pairs")
    if cache is None or cache["version"] != version:
        cache = current_app.extensions["dope_pairs"] = {"version": version, "variants": {}}
    rows = cache["variants"].get(variant_id)
    if rows is None:
        rows = cache["variants"][variant_id] = _CANDIDATES.execute(
            fastsql.connection(), {"b_variant": variant_id}).fetchall()
    return rows


def pick_pair(variant_id: int, seen: Seen, version: tuple, rng=random) -> Chosen | None:
    """Return a random pair of this variant that the voter has not seen, or None.

    Uniform over the fresh pairs: a few uniform draws, each kept only if fresh, then
    (a voter who has seen most of them) a uniform choice among all the fresh ones.
    """
    rows = variant_pairs(variant_id, version)
    queries, images = seen.queries, seen.images

    def fresh(row) -> bool:
        return (variant_id, row[1]) not in queries and (row[1], row[2]) not in images

    chosen = None
    for _ in range(min(len(rows), RANDOM_TRIES)):
        row = rows[rng.randrange(len(rows))]
        if fresh(row):
            chosen = row
            break
    else:
        candidates = [row for row in rows if fresh(row)]
        chosen = rng.choice(candidates) if candidates else None
    if chosen is None:
        return None
    pair_id, _, _, query_file, match_file = chosen
    return Chosen(pair_id, query_file, match_file)


def next_pair(state: tuple[Seen, list], control_share: float, rng=random) -> Chosen | None:
    """Return the next pair to show a voter, or None when none is left.

    `state` is seen_by(voter_id): what the voter has been shown, and the variant rows.
    """
    seen, rows = state
    version = tuple(rows[0][3:]) if rows else ()
    for variant_id in variant_order(rows, control_share, rng):
        pair = pick_pair(variant_id, seen, version, rng)
        if pair is not None:
            return pair
    return None
