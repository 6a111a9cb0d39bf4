"""`flask --app webapp recount-votes`: the per-variant counters checked against the votes."""

from __future__ import annotations

import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import Pair, Variant, Vote


def count_votes() -> dict[int, dict[str, int]]:
    """Return {variant id: {verdict: n}} counted from the votes table (slow; for checks)."""
    counts: dict[int, dict[str, int]] = {}
    rows = db.session.execute(sa.select(Vote.variant_id, Vote.verdict, sa.func.count())
                              .group_by(Vote.variant_id, Vote.verdict))
    for variant_id, verdict, n in rows:
        counts.setdefault(variant_id, {})[verdict] = n
    return counts


def count_judgments() -> dict[int, dict[str, int]]:
    """Return {variant id: {verdict: n}} pooled: every vote on an image pair the variant
    returns for that query (slow; for checks)."""
    shown, mine = sa.orm.aliased(Pair), sa.orm.aliased(Pair)
    counts: dict[int, dict[str, int]] = {}
    rows = db.session.execute(
        sa.select(mine.variant_id, Vote.verdict, sa.func.count())
        .join(shown, shown.id == Vote.pair_id)
        .join(mine, sa.and_(mine.query_id == shown.query_id, mine.match_id == shown.match_id))
        .group_by(mine.variant_id, Vote.verdict))
    for variant_id, verdict, n in rows:
        counts.setdefault(variant_id, {})[verdict] = n
    return counts


def recount_votes() -> int:
    """Set every variant's counters from the votes table; return how many were off."""
    served, pooled, changed = count_votes(), count_judgments(), 0
    for variant in db.session.scalars(sa.select(Variant)):
        c, p = served.get(variant.id, {}), pooled.get(variant.id, {})
        fresh = tuple(c.get(v, 0) for v in ("dope", "nope", "skip")) + \
            tuple(p.get(v, 0) for v in ("dope", "nope", "skip"))
        names = ("dope_count", "nope_count", "skip_count", "judged_dope", "judged_nope",
                 "judged_skip")
        if tuple(getattr(variant, n) for n in names) != fresh:
            for name, value in zip(names, fresh, strict=True):
                setattr(variant, name, value)
            changed += 1
    db.session.commit()
    return changed
