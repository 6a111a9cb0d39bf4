"""Judging a tried photo's matches blind: which match next, a vote, "the next one".

The page holds only nonces (webapp.models.UploadMatch.nonce) and picture URLs: nothing
that names a variant. First every distinct first match (rank 1) of the photo, in random
order, each once however many variants return it (the vote counts for all of them, as
in the game); after a nope, "show me the next one" offers that match's variant's next
match the voter has not judged, recorded at its rank. A voter judges an image once per
photo, whatever rank shows it (the vote judges the image pair).
"""

from __future__ import annotations

import random

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from webapp.extensions import db
from webapp.http import ApiError
from webapp.models import Image, Upload, UploadMatch, UploadVote, utcnow

VERDICTS = ("dope", "nope", "skip")
NOPE_REASONS = ("colour", "pattern", "shape", "type")
MAX_DECISION_MS = 3_600_000


def own_upload(nonce, voter_id: str | None) -> Upload:
    """Return the voter's upload by its nonce, or raise 404 (anyone else's too)."""
    upload = db.session.scalars(sa.select(Upload).where(Upload.nonce == str(nonce))).first() \
        if isinstance(nonce, str) else None
    return _owned(upload, voter_id)


def _owned(upload: Upload | None, voter_id: str | None) -> Upload:
    """Return the upload if it is the voter's, else raise 404."""
    if upload is None or voter_id is None or upload.voter_id != voter_id:
        raise ApiError(404, "no_photo", "No such photo of yours; try another.")
    return upload


def _judged_images(upload: Upload, voter_id: str) -> set[int]:
    return set(db.session.scalars(sa.select(UploadVote.image_id).where(
        UploadVote.upload_id == upload.id, UploadVote.voter_id == voter_id)))


def shown(match: UploadMatch, left: int, root: str) -> dict:
    image = db.session.get(Image, match.image_id)
    return {"token": match.nonce, "image": f"{root}/images/{image.file}", "left": left}


def next_first_match(upload: Upload, voter_id: str, root: str, rng=random) -> dict:
    """Return the next first match to judge ({"token", "image", "left"}), or
    {"done": True} once every distinct first match is judged."""
    judged = _judged_images(upload, voter_id)
    firsts = db.session.scalars(sa.select(UploadMatch).where(
        UploadMatch.upload_id == upload.id, UploadMatch.rank == 1)).all()
    by_image: dict[int, list[UploadMatch]] = {}
    for m in firsts:
        if m.image_id not in judged:
            by_image.setdefault(m.image_id, []).append(m)
    if not by_image:
        return {"done": True}
    image = rng.choice(sorted(by_image))
    return shown(rng.choice(by_image[image]), len(by_image) - 1, root)


def next_after_nope(token, voter_id: str | None, root: str) -> dict:
    """The next match of the variant whose match `token` the voter said nope to."""
    match = _match(token)
    upload = _owned(db.session.get(Upload, match.upload_id), voter_id)
    vote = db.session.scalars(sa.select(UploadVote).where(
        UploadVote.match_id == match.id, UploadVote.voter_id == voter_id)).first()
    if vote is None or vote.verdict != "nope":
        raise ApiError(409, "not_a_nope", "The next match is offered after a nope.")
    judged = _judged_images(upload, voter_id)
    later = db.session.scalars(sa.select(UploadMatch).where(
        UploadMatch.upload_id == upload.id, UploadMatch.variant_id == match.variant_id,
        UploadMatch.rank > match.rank).order_by(UploadMatch.rank)).all()
    for m in later:
        if m.image_id not in judged:
            return shown(m, 0, root)
    return {"done": True}


def _match(token) -> UploadMatch:
    match = db.session.scalars(sa.select(UploadMatch).where(
        UploadMatch.nonce == token)).first() if isinstance(token, str) else None
    if match is None:
        raise ApiError(404, "no_match", "Unknown match token.")
    return match


def read_try_vote(body) -> tuple[str, str, str | None, int | None]:
    """Return (token, verdict, nope reason, decision ms) of a vote body, or raise 400."""
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "Send a JSON object.")
    token, verdict, reason = body.get("token"), body.get("verdict"), body.get("reason")
    if not isinstance(token, str) or not token:
        raise ApiError(400, "bad_request", "token is required.")
    if verdict not in VERDICTS:
        raise ApiError(400, "bad_request", f"verdict must be one of {', '.join(VERDICTS)}.")
    if reason is not None and (verdict != "nope" or reason not in NOPE_REASONS):
        raise ApiError(400, "bad_request", "reason goes with a nope, and is one of "
                                           f"{', '.join(NOPE_REASONS)}.")
    ms = body.get("decision_ms")
    if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int | float)):
        raise ApiError(400, "bad_request", "decision_ms must be a number.")
    return token, verdict, reason, None if ms is None else int(min(max(ms, 0),
                                                                     MAX_DECISION_MS))


def cast_try_vote(body, voter_id: str | None, origin: str | None) -> dict:
    """Store a vote on one of the voter's matches (committed); say whether a next match
    can be asked for (after a nope)."""
    token, verdict, reason, ms = read_try_vote(body)
    match = _match(token)
    upload = _owned(db.session.get(Upload, match.upload_id), voter_id)
    db.session.add(UploadVote(upload_id=upload.id, match_id=match.id, image_id=match.image_id,
                              rank=match.rank, voter_id=voter_id, verdict=verdict,
                              nope_reason=reason, decision_ms=ms, origin=origin,
                              created_at=utcnow()))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise ApiError(409, "already_judged", "You have judged this match already.") from None
    return {"ok": True, "more": verdict == "nope"}


def set_nope_reason(body, voter_id: str | None) -> dict:
    """Store the optional reason of the voter's nope on a match (committed)."""
    token = body.get("token") if isinstance(body, dict) else None
    reason = body.get("reason") if isinstance(body, dict) else None
    if reason not in NOPE_REASONS:
        raise ApiError(400, "bad_request", f"reason is one of {', '.join(NOPE_REASONS)}.")
    match = _match(token)
    vote = db.session.scalars(sa.select(UploadVote).where(
        UploadVote.match_id == match.id, UploadVote.voter_id == voter_id)).first() \
        if voter_id else None
    if vote is None or vote.verdict != "nope":
        raise ApiError(409, "not_a_nope", "A reason goes with a nope you cast.")
    vote.nope_reason = reason
    db.session.commit()
    return {"ok": True}
