"""Database models: builds, variants, images, pairs, issued tokens, voters and votes."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from webapp.extensions import db

VERDICTS = ("dope", "nope", "skip")


def utcnow() -> datetime:
    """Return the current time in UTC, naive (the database stores UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


class Build(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    build_id: so.Mapped[str] = so.mapped_column(sa.String(128), unique=True)
    format_version: so.Mapped[int]
    engine_version: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    created_at: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    imported_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return f"<Build {self.build_id}>"


class Variant(db.Model):
    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    slug: so.Mapped[str] = so.mapped_column(sa.String(128), unique=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(256))
    network: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    layer: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    metric: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    control: so.Mapped[bool] = so.mapped_column(default=False)
    offline_accuracy: so.Mapped[float | None]
    build_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Build.id), index=True)
    # Counters kept in the vote's own transaction so the leaderboard never scans votes:
    # *_count the votes cast on this variant's own pairs, judged_* the pooled ones
    # (every vote on an image pair this variant returns for that query).
    dope_count: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    nope_count: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    skip_count: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    judged_dope: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    judged_nope: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    judged_skip: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    # A variant retrained from votes: its parent's slug, its round, and the engine's
    # lineage record (JSON text); None for every other variant.
    parent_slug: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    round: so.Mapped[int | None]
    lineage: so.Mapped[str | None] = so.mapped_column(sa.Text)

    build: so.Mapped[Build] = so.relationship()

    def __repr__(self) -> str:
        return f"<Variant {self.slug}>"


class Image(db.Model):
    __table_args__ = (sa.UniqueConstraint("image_id", "file"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    image_id: so.Mapped[str] = so.mapped_column(sa.String(128), index=True)
    file: so.Mapped[str] = so.mapped_column(sa.String(80))  # <sha256>.<ext>
    category: so.Mapped[str] = so.mapped_column(sa.String(128), index=True)
    item_id: so.Mapped[str | None] = so.mapped_column(sa.String(128))

    @property
    def sha(self) -> str:
        return self.file.split(".", 1)[0]

    def __repr__(self) -> str:
        return f"<Image {self.image_id}>"


class Pair(db.Model):
    __table_args__ = (sa.UniqueConstraint("variant_id", "query_id", "match_id"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    query_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Image.id), index=True)
    match_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Image.id), index=True)
    variant_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Variant.id), index=True)
    build_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Build.id), index=True)
    rank: so.Mapped[int] = so.mapped_column(default=1)
    distance: so.Mapped[float | None]

    query_image: so.Mapped[Image] = so.relationship(foreign_keys=[query_id])
    match_image: so.Mapped[Image] = so.relationship(foreign_keys=[match_id])
    variant: so.Mapped[Variant] = so.relationship()
    build: so.Mapped[Build] = so.relationship()

    def __repr__(self) -> str:
        return f"<Pair {self.id}>"


class Voter(db.Model):
    """An anonymous session; the rate-limit window lives here so all workers share it."""

    id: so.Mapped[str] = so.mapped_column(sa.String(32), primary_key=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_vote_at: so.Mapped[datetime | None]
    window_start: so.Mapped[datetime | None]
    window_votes: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    votes_cast: so.Mapped[int] = so.mapped_column(default=0, server_default="0")

    def __repr__(self) -> str:
        return f"<Voter {self.id}>"


class RateBucket(db.Model):
    """One (kind, address)'s request budget (webapp/play/limits.py): a token bucket and an
    hourly count. Times are Unix seconds, so every worker and host shares one clock."""

    key: so.Mapped[str] = so.mapped_column(sa.String(80), primary_key=True)
    tokens: so.Mapped[float] = so.mapped_column(sa.Float)
    updated_at: so.Mapped[float] = so.mapped_column(sa.Float)
    hour_start: so.Mapped[float] = so.mapped_column(sa.Float)
    hour_count: so.Mapped[int]


class IssuedToken(db.Model):
    __table_args__ = (sa.Index("ix_issued_token_voter_issued_at", "voter_id", "issued_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    nonce: so.Mapped[str] = so.mapped_column(sa.String(32), unique=True)
    # Indexed by ix_issued_token_voter_issued_at, whose first column it is.
    voter_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey(Voter.id))
    # Not indexed: joins go to pair's key, and pairs are never deleted.
    pair_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Pair.id))
    issued_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    used: so.Mapped[bool] = so.mapped_column(default=False)
    # The allocation rule that chose the pair (webapp/stats/allocation.py) and the probability
    # it gave the image pair; None for tokens from before migration 0006.
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(12))
    probability: so.Mapped[float | None] = so.mapped_column(sa.Float)
    # The fit whose allocation drew the pair (None: none yet); not a foreign key, so
    # fits may be pruned.
    fit_id: so.Mapped[int | None]
    # A keyed hash of the client's address (webapp/play/limits.py, origin), never the address.
    origin: so.Mapped[str | None] = so.mapped_column(sa.String(16))

    pair: so.Mapped[Pair] = so.relationship()


class Vote(db.Model):
    __table_args__ = (
        sa.Index("ix_vote_voter_id_created_at", "voter_id", "created_at"),
        sa.Index("ix_vote_variant_id_verdict", "variant_id", "verdict"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # Not indexed: joins go to pair's key, and pairs are never deleted.
    pair_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Pair.id))
    # Both indexed as the first column of the composite indexes above: every index is
    # written on each vote, so none is kept twice.
    variant_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Variant.id))
    voter_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey(Voter.id))
    verdict: so.Mapped[str] = so.mapped_column(sa.String(8))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    decision_ms: so.Mapped[int | None]
    # Unique: a token buys exactly one vote, even when replays race each other.
    token_nonce: so.Mapped[str] = so.mapped_column(sa.String(32), unique=True)
    # Copied from the token: why, how likely and under which fit the pair was served.
    reason: so.Mapped[str | None] = so.mapped_column(sa.String(12))
    probability: so.Mapped[float | None] = so.mapped_column(sa.Float)
    fit_id: so.Mapped[int | None]
    origin: so.Mapped[str | None] = so.mapped_column(sa.String(16))

    pair: so.Mapped[Pair] = so.relationship()
    variant: so.Mapped[Variant] = so.relationship()

    def __repr__(self) -> str:
        return f"<Vote {self.id} {self.verdict}>"


class Upload(db.Model):
    """A photo someone tried on the try-it-out page (webapp/tryout). The photo itself is
    kept only with its voter's consent (`photo_file`, upright and without metadata); its
    features (float16, base64 JSON per feature key) and the matches always are."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    nonce: so.Mapped[str] = so.mapped_column(sa.String(32), unique=True)  # the page's handle
    voter_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey(Voter.id), index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    origin: so.Mapped[str | None] = so.mapped_column(sa.String(16))
    service_build: so.Mapped[str] = so.mapped_column(sa.String(128))  # the build searched
    photo_file: so.Mapped[str | None] = so.mapped_column(sa.String(80))
    features: so.Mapped[str | None] = so.mapped_column(sa.Text)


class UploadMatch(db.Model):
    """One variant's rank-r catalog match for an upload. `nonce` is what the page holds
    of it: nothing in it names the variant."""

    __table_args__ = (sa.UniqueConstraint("upload_id", "variant_id", "rank"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    nonce: so.Mapped[str] = so.mapped_column(sa.String(32), unique=True)
    upload_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Upload.id))
    variant_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Variant.id))
    rank: so.Mapped[int]
    image_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Image.id))
    distance: so.Mapped[float] = so.mapped_column(sa.Float)


class UploadVote(db.Model):
    """A judgment of an upload's match image. It judges the image: at rank 1 it counts
    for every variant whose first match that image is (pooled, as in the game); a "next
    one" (rank > 1) was asked for after a nope, for the variant `match_id` names."""

    __table_args__ = (sa.UniqueConstraint("upload_id", "image_id", "voter_id"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    upload_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Upload.id), index=True)
    match_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(UploadMatch.id))
    image_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey(Image.id))
    rank: so.Mapped[int]
    voter_id: so.Mapped[str] = so.mapped_column(sa.ForeignKey(Voter.id))
    verdict: so.Mapped[str] = so.mapped_column(sa.String(8))
    nope_reason: so.Mapped[str | None] = so.mapped_column(sa.String(12))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    decision_ms: so.Mapped[int | None]
    origin: so.Mapped[str | None] = so.mapped_column(sa.String(16))


class FitResult(db.Model):
    """One run of the periodic fit (webapp/jobs/fit.py): its figures as JSON, and the newest
    vote it read. The leaderboard reads the newest row."""

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_vote_id: so.Mapped[int]
    body: so.Mapped[str] = so.mapped_column(sa.Text)
    # The weights h of the epoch its allocation starts (webapp/stats/estimates.py, Ledger):
    # {"v:<variant id>" or "d:<id>:<id>": h}, JSON; read by later fits.
    epoch_weights: so.Mapped[str] = so.mapped_column(sa.Text)


# A stored vote counts itself and spends its token in its own transaction, whoever
# inserts it: every variant that returns the vote's image pair for its query has its
# pooled counter for the verdict raised, the served variant its own counter too, and
# the issued token with its nonce is marked used, so the vote request runs two
# statements, not four. Migration 0006 creates the same trigger (a frozen copy,
# checked equal by tests/webapp/test_migrations.py); it is kept here too so that
# databases made by `db.create_all()` (tests) get it.
_RETURNING = ("SELECT other.variant_id FROM pair AS shown JOIN pair AS other "
              "ON other.query_id = shown.query_id AND other.match_id = shown.match_id "
              "WHERE shown.id = NEW.pair_id")
VOTE_TRIGGER = {
    "sqlite": [f"""
CREATE TRIGGER vote_counted AFTER INSERT ON vote FOR EACH ROW
BEGIN
  UPDATE variant SET dope_count = dope_count + (id = NEW.variant_id AND NEW.verdict = 'dope'),
                     nope_count = nope_count + (id = NEW.variant_id AND NEW.verdict = 'nope'),
                     skip_count = skip_count + (id = NEW.variant_id AND NEW.verdict = 'skip'),
                     judged_dope = judged_dope + (NEW.verdict = 'dope'),
                     judged_nope = judged_nope + (NEW.verdict = 'nope'),
                     judged_skip = judged_skip + (NEW.verdict = 'skip')
   WHERE id IN ({_RETURNING});
  UPDATE issued_token SET used = 1 WHERE nonce = NEW.token_nonce;
END"""],
    "postgresql": [f"""
CREATE FUNCTION vote_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE variant SET
    dope_count = dope_count + CAST(id = NEW.variant_id AND NEW.verdict = 'dope' AS integer),
    nope_count = nope_count + CAST(id = NEW.variant_id AND NEW.verdict = 'nope' AS integer),
    skip_count = skip_count + CAST(id = NEW.variant_id AND NEW.verdict = 'skip' AS integer),
    judged_dope = judged_dope + CAST(NEW.verdict = 'dope' AS integer),
    judged_nope = judged_nope + CAST(NEW.verdict = 'nope' AS integer),
    judged_skip = judged_skip + CAST(NEW.verdict = 'skip' AS integer)
   WHERE id IN ({_RETURNING});
  UPDATE issued_token SET used = true WHERE nonce = NEW.token_nonce;
  RETURN NULL;
END
$$""", """
CREATE TRIGGER vote_counted AFTER INSERT ON vote FOR EACH ROW EXECUTE FUNCTION vote_counted()"""],
}


@sa.event.listens_for(Vote.__table__, "after_create")
def _create_vote_trigger(target, connection, **kw) -> None:
    statements = VOTE_TRIGGER.get(connection.dialect.name)
    if statements is None:
        raise NotImplementedError(
            f"Dope or Nope runs on SQLite or PostgreSQL, not {connection.dialect.name}.")
    for statement in statements:
        connection.exec_driver_sql(statement)
