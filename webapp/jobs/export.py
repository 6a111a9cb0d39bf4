"""Vote export (docs/build-format.md, "Vote export"): CSV and JSON Lines.

JSON Lines (format 2) carries, before the photo votes, one photo record per tried
photo that has a vote: the features the query service computed of it, which
retraining reads in place of the photo. CSV has the votes only."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from webapp.extensions import db
from webapp.models import Build, Image, Pair, Upload, UploadMatch, UploadVote, Variant, Vote

FORMAT_VERSION = 2
COLUMNS = ["vote_id", "query_id", "match_id", "variant", "verdict", "created_at",
           "decision_ms", "voter", "build_id", "reason", "probability", "source", "rank",
           "nope_reason"]
PHOTO_QUERY = "photo:"  # a tried photo's query id: photo:<its handle>


def voter_hash(salt: bytes, voter_id: str) -> str:
    """A voter as exported: a salted hash, the salt new for each export."""
    return hashlib.sha256(salt + voter_id.encode()).hexdigest()[:12]


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat(timespec="seconds")


def vote_rows(batch: int = 2000, *, photo_records: bool = False) -> Iterator[dict]:
    """Yield every vote as an export object, voters replaced by a salted hash (and with
    photo_records, the tried photos' records before their votes)."""
    salt = secrets.token_bytes(16)
    yield from catalog_vote_rows(salt, batch)
    if photo_records:
        yield from photo_rows(batch // 10 or 1)
    yield from photo_vote_rows(salt, batch)


def catalog_vote_rows(salt: bytes, batch: int = 2000) -> Iterator[dict]:
    """Yield the game's votes (source "catalog")."""
    query_image, match_image = so.aliased(Image), so.aliased(Image)
    stmt = (sa.select(Vote.id, query_image.image_id, match_image.image_id, Variant.slug,
                      Vote.verdict, Vote.created_at, Vote.decision_ms, Vote.voter_id,
                      Build.build_id, Vote.reason, Vote.probability)
            .join(Pair, Pair.id == Vote.pair_id)
            .join(query_image, query_image.id == Pair.query_id)
            .join(match_image, match_image.id == Pair.match_id)
            .join(Variant, Variant.id == Vote.variant_id)
            .join(Build, Build.id == Pair.build_id)
            .order_by(Vote.id).execution_options(yield_per=batch))
    for row in db.session.execute(stmt):
        voter = voter_hash(salt, row[7])
        yield dict(zip(COLUMNS, [row[0], row[1], row[2], row[3], row[4], _iso(row[5]),
                                 row[6], voter, row[8], row[9], row[10], "catalog", 1, None],
                       strict=True))


def photo_rows(batch: int = 200) -> Iterator[dict]:
    """Yield a photo record for every tried photo someone voted on: the build the
    service searched and its features ({key: base64 float16 row}), never the photo."""
    voted = sa.select(UploadVote.upload_id).distinct()
    stmt = (sa.select(Upload.nonce, Upload.service_build, Upload.features)
            .where(Upload.id.in_(voted)).order_by(Upload.id)
            .execution_options(yield_per=batch))
    for nonce, build_id, features in db.session.execute(stmt):
        yield {"record": "photo", "query_id": PHOTO_QUERY + nonce, "build_id": build_id,
               "features": json.loads(features or "{}")}


def photo_vote_rows(salt: bytes, batch: int = 2000) -> Iterator[dict]:
    """Yield the try-it-out votes (source "photo"): the query is the tried photo, the
    match a catalog item, the variant the one whose match (at `rank`) was shown; a
    first match (rank 1) judges every variant that returns it too. Vote ids are their
    own sequence."""
    stmt = (sa.select(UploadVote.id, Upload.nonce, Image.image_id, Variant.slug,
                      UploadVote.verdict, UploadVote.created_at, UploadVote.decision_ms,
                      UploadVote.voter_id, Upload.service_build, UploadVote.rank,
                      UploadVote.nope_reason)
            .join(Upload, Upload.id == UploadVote.upload_id)
            .join(UploadMatch, UploadMatch.id == UploadVote.match_id)
            .join(Image, Image.id == UploadVote.image_id)
            .join(Variant, Variant.id == UploadMatch.variant_id)
            .order_by(UploadVote.id).execution_options(yield_per=batch))
    for row in db.session.execute(stmt):
        voter = voter_hash(salt, row[7])
        yield dict(zip(COLUMNS, [row[0], PHOTO_QUERY + row[1], row[2], row[3], row[4],
                                 _iso(row[5]), row[6], voter, row[8], None, None, "photo",
                                 row[9], row[10]], strict=True))


def header() -> dict:
    """Return the JSONL header object."""
    builds = db.session.scalars(sa.select(Build.build_id).order_by(Build.id)).all()
    return {"format_version": FORMAT_VERSION, "kind": "dope-or-nope-votes",
            "exported_at": _iso(datetime.now(UTC).replace(tzinfo=None)), "builds": builds}


def jsonl_lines() -> Iterator[str]:
    """Yield the JSONL export, one line at a time."""
    yield json.dumps(header()) + "\n"
    for row in vote_rows(photo_records=True):
        yield json.dumps(row) + "\n"


def csv_lines() -> Iterator[str]:
    """Yield the CSV export (column header, then one line per vote)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in vote_rows():
        writer.writerow(row)
        if buf.tell() > 65536:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()
