"""The fit's stored result: one reader of a fit_result row and its JSON body.

webapp.jobs.fit writes the body (webapp.stats.fitting makes it); the leaderboard, the
team page and the pair allocation read it only through `StoredFit`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from webapp.extensions import db
from webapp.models import FitResult, Vote

NO_FIGURES = {"estimate": None, "ci_low": 0.0, "ci_high": 1.0, "rank_low": None,
              "rank_high": None, "p_best": None}


@dataclass(frozen=True)
class StoredFit:
    """A fit as stored: its row's id, time and newest vote, and its figures (`body`).
    The empty StoredFit (no fit yet) answers every question with "nothing known"."""

    id: int | None = None
    created_at: datetime | None = None
    last_vote_id: int = 0
    body: dict = field(default_factory=dict)

    @classmethod
    def of_row(cls, row: FitResult | None) -> StoredFit:
        if row is None:
            return cls()
        return cls(row.id, row.created_at, row.last_vote_id, json.loads(row.body))

    @classmethod
    def parse(cls, text: str | None) -> StoredFit:
        """Return a fit from its body's JSON alone (an empty fit for None or bad JSON)."""
        try:
            body = json.loads(text) if text else {}
        except ValueError:
            body = {}
        return cls(body=body if isinstance(body, dict) else {})

    @property
    def exists(self) -> bool:
        return bool(self.body)

    @property
    def corrected(self) -> dict:
        return self.body.get("corrected", {})

    @property
    def voters(self) -> dict | None:
        return self.body.get("voters")

    @property
    def settled(self) -> bool:
        return bool(self.corrected.get("settled"))

    @property
    def categories(self) -> list[str]:
        """The catalog categories the fit has a board for."""
        return sorted(self.body.get("categories", {}))

    def for_category(self, category: str) -> StoredFit:
        """The same fit with one category's figures as its corrected ones (KeyError if
        the fit has no board for it)."""
        body = dict(self.body, corrected=self.body.get("categories", {})[category])
        return StoredFit(self.id, self.created_at, self.last_vote_id, body)

    @property
    def has_photos(self) -> bool:
        return bool(self.body.get("photos"))

    def for_photos(self) -> StoredFit:
        """The same fit with the "on your photos" figures as its corrected ones (KeyError
        before any judged photo)."""
        if not self.has_photos:
            raise KeyError("photos")
        return StoredFit(self.id, self.created_at, self.last_vote_id,
                         dict(self.body, corrected=self.body["photos"]))

    def figures(self, slug: str, control: bool, part: str = "corrected") -> dict | None:
        """Return a variant's stored figures (the control's reference row), or None."""
        return self.body.get(part, {}).get("reference" if control else "variants", {}).get(slug)

    def focus(self, position) -> dict[tuple[int, int], float] | None:
        """Return the allocation's (leader, challenger) weights by `position(variant id)`;
        None without one or when it names a variant `position` does not know."""
        try:
            focus = self.body["allocation"]["focus"]
            return {(position(a), position(b)): float(w) for a, b, w in focus} or None
        except (TypeError, KeyError, ValueError):
            return None


def latest_fit() -> StoredFit:
    """Return the newest stored fit (empty when there is none)."""
    return StoredFit.of_row(db.session.scalar(
        sa.select(FitResult).order_by(FitResult.id.desc()).limit(1)))


def newest_vote_id() -> int:
    """Return the id of the newest vote (0 before any)."""
    return db.session.scalar(sa.select(sa.func.max(Vote.id))) or 0
