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
from datetime import datetime
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
# Pairs are only ever added (by import-build), never changed or deleted, so the
# last two columns name the pair table's content: an import that adds pairs raises
# MAX(pair.id). They ride along with the variant list to save a round trip.
_VARIANTS = fastsql.Prepared(sa.select(
    Variant.id, Variant.control, Variant.dope_count + Variant.nope_count + Variant.skip_count,
    sa.select(sa.func.max(Pair.id)).scalar_subquery(),
    sa.select(Build.build_id).order_by(Build.id.desc()).limit(1).scalar_subquery()))
# The last column says whether the pair was issued since b_since (for the hourly cap):
# a flag, since turning every row's timestamp into a datetime costs more than the query.
_HISTORY = fastsql.Prepared(
    sa.select(Pair.variant_id, Pair.query_id, Pair.match_id,
              IssuedToken.issued_at > sa.bindparam("b_since", type_=sa.DateTime()))
    .join(IssuedToken, IssuedToken.pair_id == Pair.id)
    .where(IssuedToken.voter_id == sa.bindparam("b_voter")))
_QUERY_IMAGE, _MATCH_IMAGE = so.aliased(Image), so.aliased(Image)
_CANDIDATES = fastsql.Prepared(
    sa.select(Pair.id, Pair.query_id, Pair.match_id, _QUERY_IMAGE.file, _MATCH_IMAGE.file)
    .join(_QUERY_IMAGE, _QUERY_IMAGE.id == Pair.query_id)
    .join(_MATCH_IMAGE, _MATCH_IMAGE.id == Pair.match_id)
    .where(Pair.variant_id == sa.bindparam("b_variant"))
    .order_by(Pair.id))


def variant_order(control_share: float, rng=random, rows=None) -> list[int]:
    """Return variant ids in the order to try for the next pair."""
    variants = rows if rows is not None else \
        _VARIANTS.execute(fastsql.connection()).fetchall()
    real = [(n, rng.random(), vid) for vid, control, n, *_ in variants if not control]
    controls = [vid for vid, control, *_ in variants if control]
    order = [vid for _, _, vid in sorted(real)]
    if controls and rng.random() < control_share:
        return controls + order
    return order + controls


def voter_history(voter_id: str, since=None) -> list[tuple]:
    """Return (variant, query image, match image, issued since `since`) per pair shown."""
    since = since or datetime(1970, 1, 1)
    return _HISTORY.execute(fastsql.connection(),
                            {"b_voter": voter_id, "b_since": since}).fetchall()


def seen_sets(history: list[tuple]) -> tuple[set, set]:
    """Return the (variant, query) and (query image, match image) pairs in a history."""
    return {(v, q) for v, q, _, _ in history}, {(q, m) for _, q, m, _ in history}


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


def pick_pair(variant_id: int, seen: tuple[set, set], version: tuple,
              rng=random) -> Chosen | None:
    """Return a random pair of this variant that the voter has not seen, or None."""
    seen_queries, seen_images = seen
    fresh = [row for row in variant_pairs(variant_id, version)
             if (variant_id, row[1]) not in seen_queries and (row[1], row[2]) not in seen_images]
    if not fresh:
        return None
    pair_id, _, _, query_file, match_file = rng.choice(fresh)
    return Chosen(pair_id, query_file, match_file)


def next_pair(voter_id: str, control_share: float, rng=random,
              history: list[tuple] | None = None) -> Chosen | None:
    """Return the next pair to show this voter, or None when none is left."""
    seen = seen_sets(voter_history(voter_id) if history is None else history)
    rows = _VARIANTS.execute(fastsql.connection()).fetchall()
    version = tuple(rows[0][3:]) if rows else ()
    for variant_id in variant_order(control_share, rng, rows):
        pair = pick_pair(variant_id, seen, version, rng)
        if pair is not None:
            return pair
    return None
