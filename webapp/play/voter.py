"""Who is voting: the signed voter cookie, and the voter row behind it."""

from __future__ import annotations

from flask import after_this_request, current_app, g, request, session
from sqlalchemy.exc import IntegrityError

from webapp.extensions import db
from webapp.models import Voter
from webapp.play.tokens import VOTER_COOKIE, VOTER_RE, new_voter_id, read_voter_cookie, voter_cookie


def current_voter_id() -> str | None:
    """Return the voter id of this browser's signed voter cookie, None without one.

    Voters from before the voter cookie carry their id in Flask's session cookie:
    they keep it, and get the voter cookie on this response.
    """
    if "dope_voter" in g:
        return g.dope_voter
    voter_id = read_voter_cookie(request.cookies.get(VOTER_COOKIE))
    if voter_id is None:
        legacy = session.get("voter")
        if isinstance(legacy, str) and VOTER_RE.match(legacy):
            voter_id = legacy
            session.pop("voter")
            give_voter_cookie(voter_id)
    g.dope_voter = voter_id
    return voter_id


def give_voter_cookie(voter_id: str) -> None:
    """Set the signed voter cookie on this request's response, whatever it turns out to be."""
    @after_this_request
    def set_cookie(response):
        interface, app = current_app.session_interface, current_app._get_current_object()
        response.set_cookie(
            VOTER_COOKIE, voter_cookie(voter_id), path=interface.get_cookie_path(app),
            domain=interface.get_cookie_domain(app), secure=interface.get_cookie_secure(app),
            httponly=True, samesite=interface.get_cookie_samesite(app))
        return response


def create_voter(voter_id: str) -> None:
    """Store the voter row (committed); a row that already exists is fine."""
    db.session.add(Voter(id=voter_id))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()


def ensure_voter() -> str:
    """Return this session's voter id, creating the voter (cookie and row) if needed.

    A session that already carries a voter id has its row: the row is stored before
    the signed cookie goes out. (Should the row be gone, issuing the pair's token
    fails on its foreign key and `issue_token` stores the row then.)
    """
    voter_id = current_voter_id()
    if voter_id is None:
        voter_id = g.dope_voter = new_voter_id()
        create_voter(voter_id)
        give_voter_cookie(voter_id)
    return voter_id
