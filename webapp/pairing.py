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

import sqlalchemy as sa
import sqlalchemy.orm as so

from .extensions import db
from .models import IssuedToken, Pair, Variant


def variant_order(control_share: float, rng=random) -> list[int]:
    """Return variant ids in the order to try for the next pair."""
    variants = db.session.execute(
        sa.select(Variant.id, Variant.control,
                  Variant.dope_count + Variant.nope_count + Variant.skip_count)).all()
    real = [(n, rng.random(), vid) for vid, control, n in variants if not control]
    controls = [vid for vid, control, _ in variants if control]
    order = [vid for _, _, vid in sorted(real)]
    if controls and rng.random() < control_share:
        return controls + order
    return order + controls


def shown_to(voter_id: str) -> tuple[set, set]:
    """Return the (variant, query) and (query image, match image) pairs this voter has seen."""
    rows = db.session.execute(
        sa.select(Pair.variant_id, Pair.query_id, Pair.match_id)
        .join(IssuedToken, IssuedToken.pair_id == Pair.id)
        .where(IssuedToken.voter_id == voter_id)).all()
    return {(v, q) for v, q, _ in rows}, {(q, m) for _, q, m in rows}


def pick_pair(variant_id: int, seen: tuple[set, set], rng=random) -> Pair | None:
    """Return a random pair of this variant that the voter has not seen, or None."""
    seen_queries, seen_images = seen
    candidates = db.session.execute(
        sa.select(Pair.id, Pair.query_id, Pair.match_id).where(Pair.variant_id == variant_id))
    fresh = [pair_id for pair_id, q, m in candidates
             if (variant_id, q) not in seen_queries and (q, m) not in seen_images]
    if not fresh:
        return None
    images = [so.joinedload(Pair.query_image), so.joinedload(Pair.match_image)]
    return db.session.get(Pair, rng.choice(fresh), options=images)


def next_pair(voter_id: str, control_share: float, rng=random) -> Pair | None:
    """Return the next pair to show this voter, or None when none is left."""
    seen = shown_to(voter_id)
    for variant_id in variant_order(control_share, rng):
        pair = pick_pair(variant_id, seen, rng)
        if pair is not None:
            return pair
    return None
