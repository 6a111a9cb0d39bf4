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

from .extensions import db
from .models import Build, Image, IssuedToken, Pair, Variant


class Chosen(NamedTuple):
    """The pair to serve: its id and the two image files (nothing about the variant)."""

    id: int
    query_file: str
    match_file: str


# Built once; SQLAlchemy caches their compiled SQL.
# Pairs are only ever added (by import-build), never changed or deleted, so the
# last two columns name the pair table's content: an import that adds pairs raises
# MAX(pair.id). They ride along with the variant list to save a round trip.
_VARIANTS = sa.select(Variant.id, Variant.control,
                      Variant.dope_count + Variant.nope_count + Variant.skip_count,
                      sa.select(sa.func.max(Pair.id)).scalar_subquery(),
                      sa.select(Build.build_id).order_by(Build.id.desc()).limit(1)
                      .scalar_subquery())
# The last column says whether the pair was issued since b_since (for the hourly cap):
# a flag, since turning every row's timestamp into a datetime costs more than the query.
_HISTORY = (sa.select(Pair.variant_id, Pair.query_id, Pair.match_id,
                      IssuedToken.issued_at > sa.bindparam("b_since", type_=sa.DateTime()))
            .join(IssuedToken, IssuedToken.pair_id == Pair.id)
            .where(IssuedToken.voter_id == sa.bindparam("b_voter")))
_CANDIDATES = (sa.select(Pair.id, Pair.query_id, Pair.match_id)
               .where(Pair.variant_id == sa.bindparam("b_variant")))
_QUERY_IMAGE, _MATCH_IMAGE = so.aliased(Image), so.aliased(Image)
_FILES = (sa.select(Pair.id, _QUERY_IMAGE.file, _MATCH_IMAGE.file)
          .join(_QUERY_IMAGE, _QUERY_IMAGE.id == Pair.query_id)
          .join(_MATCH_IMAGE, _MATCH_IMAGE.id == Pair.match_id)
          .where(Pair.id == sa.bindparam("b_pair")))


def variant_order(control_share: float, rng=random, rows=None) -> list[int]:
    """Return variant ids in the order to try for the next pair."""
    variants = rows if rows is not None else db.session.connection().execute(_VARIANTS).all()
    real = [(n, rng.random(), vid) for vid, control, n, *_ in variants if not control]
    controls = [vid for vid, control, *_ in variants if control]
    order = [vid for _, _, vid in sorted(real)]
    if controls and rng.random() < control_share:
        return controls + order
    return order + controls


def voter_history(conn, voter_id: str, since=None) -> list[tuple]:
    """Return (variant, query image, match image, issued since `since`) per pair shown."""
    since = since or datetime(1970, 1, 1)
    return [tuple(r) for r in conn.execute(_HISTORY, {"b_voter": voter_id, "b_since": since})]


def seen_sets(history: list[tuple]) -> tuple[set, set]:
    """Return the (variant, query) and (query image, match image) pairs in a history."""
    return {(v, q) for v, q, _, _ in history}, {(q, m) for _, q, m, _ in history}


def variant_pairs(conn, variant_id: int, version: tuple) -> list[tuple[int, int, int]]:
    """Return (pair id, query image id, match image id) of a variant's pairs (cached)."""
    cache = current_app.extensions.get("dope_pairs")
    if cache is None or cache["version"] != version:
        cache = current_app.extensions["dope_pairs"] = {"version": version, "variants": {}}
    rows = cache["variants"].get(variant_id)
    if rows is None:
        rows = cache["variants"][variant_id] = [
            tuple(r) for r in conn.execute(_CANDIDATES, {"b_variant": variant_id})]
    return rows


def pick_pair(conn, variant_id: int, seen: tuple[set, set], version: tuple,
              rng=random) -> Chosen | None:
    """Return a random pair of this variant that the voter has not seen, or None."""
    seen_queries, seen_images = seen
    fresh = [pair_id for pair_id, q, m in variant_pairs(conn, variant_id, version)
             if (variant_id, q) not in seen_queries and (q, m) not in seen_images]
    if not fresh:
        return None
    return Chosen(*conn.execute(_FILES, {"b_pair": rng.choice(fresh)}).one())


def next_pair(voter_id: str, control_share: float, rng=random,
              history: list[tuple] | None = None) -> Chosen | None:
    """Return the next pair to show this voter, or None when none is left."""
    conn = db.session.connection()
    seen = seen_sets(voter_history(conn, voter_id) if history is None else history)
    rows = conn.execute(_VARIANTS).all()
    version = tuple(rows[0][3:]) if rows else ()
    for variant_id in variant_order(control_share, rng, rows):
        pair = pick_pair(conn, variant_id, seen, version, rng)
        if pair is not None:
            return pair
    return None
