"""What the team page shows besides the board: approval by category, lineages, two
variants on the queries they share, recent pairs and votes over time."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so

from webapp.extensions import db
from webapp.models import Image, Pair, Variant, Vote, utcnow
from webapp.stats.compare import compare_on_shared

SAMPLES = 4
HOURS = 48


def category_table() -> dict:
    """Return approval per variant and query category: {slug: {category: (dope, votes)}}."""
    stmt = (sa.select(Variant.slug, Image.category, Vote.verdict, sa.func.count())
            .join(Pair, Pair.id == Vote.pair_id).join(Image, Image.id == Pair.query_id)
            .join(Variant, Variant.id == Vote.variant_id)
            .where(Vote.verdict != "skip")
            .group_by(Variant.slug, Image.category, Vote.verdict))
    table: dict = {"categories": set(), "cells": {}}
    for slug, category, verdict, n in db.session.execute(stmt):
        table["categories"].add(category)
        dope, votes = table["cells"].get((slug, category), (0, 0))
        table["cells"][(slug, category)] = (dope + n * (verdict == "dope"), votes + n)
    table["categories"] = sorted(table["categories"])
    return table


def lineages() -> list[dict]:
    """Return every retrained variant with its parent and the engine's lineage record."""
    names = dict(db.session.execute(sa.select(Variant.slug, Variant.name)).all())
    out = []
    for variant in db.session.scalars(sa.select(Variant).where(Variant.parent_slug.is_not(None))
                                      .order_by(Variant.round, Variant.slug)):
        record = json.loads(variant.lineage) if variant.lineage else {}
        out.append({"slug": variant.slug, "name": variant.name, "round": variant.round,
                    "parent": variant.parent_slug, "parent_name": names.get(variant.parent_slug),
                    "votes": (record.get("votes") or {}).get("usable"),
                    "shares": (record.get("learned") or {}).get("shares", {}),
                    "gate": record.get("gate", {})})
    return out


def _pairs_and_tally(slug: str) -> tuple[dict, dict]:
    variant_id = sa.select(Variant.id).where(Variant.slug == slug).scalar_subquery()
    pairs = dict(db.session.execute(sa.select(Pair.query_id, Pair.match_id)
                                    .where(Pair.variant_id == variant_id, Pair.rank == 1)).all())
    rows = db.session.execute(
        sa.select(Pair.query_id, sa.func.sum(sa.case((Vote.verdict == "dope", 1), else_=0)),
                  sa.func.count())
        .join(Vote, Vote.pair_id == Pair.id)
        .where(Pair.variant_id == variant_id, Vote.verdict != "skip")
        .group_by(Pair.query_id))
    return pairs, {q: (int(d), int(n)) for q, d, n in rows}


def comparison(a: str, b: str) -> dict:
    """Return two variants' approvals on the queries both have pairs for."""
    return compare_on_shared(a, *_pairs_and_tally(a), b, *_pairs_and_tally(b))


def samples() -> dict:
    """Return the latest approved and rejected pairs per variant."""
    out = {}
    for variant in db.session.scalars(sa.select(Variant).order_by(Variant.name)):
        out[variant.slug] = {"name": variant.name}
        for verdict in ("dope", "nope"):
            stmt = (sa.select(Pair).join(Vote, Vote.pair_id == Pair.id)
                    .where(Vote.variant_id == variant.id, Vote.verdict == verdict)
                    .options(so.joinedload(Pair.query_image), so.joinedload(Pair.match_image))
                    .order_by(Vote.id.desc()).limit(SAMPLES))
            out[variant.slug][verdict] = db.session.scalars(stmt).unique().all()
    return out


def _hour_bucket():
    if db.engine.dialect.name == "sqlite":
        return sa.func.strftime("%Y-%m-%d %H:00", Vote.created_at)
    return sa.func.to_char(sa.func.date_trunc("hour", Vote.created_at), "YYYY-MM-DD HH24:00")


def votes_over_time(hours: int = HOURS) -> list[tuple[str, int]]:
    """Return (hour, votes) for the last `hours` hours, oldest first, empty hours included."""
    now = utcnow().replace(minute=0, second=0, microsecond=0)
    since = now - timedelta(hours=hours - 1)
    bucket = _hour_bucket()
    rows = db.session.execute(
        sa.select(bucket, sa.func.count()).where(Vote.created_at >= since).group_by(bucket))
    counts = {label: n for label, n in rows}
    labels = [(since + timedelta(hours=h)).strftime("%Y-%m-%d %H:00") for h in range(hours)]
    return [(label, counts.get(label, 0)) for label in labels]
