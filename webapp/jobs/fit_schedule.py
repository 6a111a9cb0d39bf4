"""When the fit runs by itself: in a background thread of a worker that serves the
leaderboard or the team page, when the newest fit is older than DOPE_FIT_INTERVAL and
votes came in since (`flask --app webapp fit [--every S]` runs it from outside)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from flask import Flask, current_app

from webapp.jobs.fit import run_fit
from webapp.jobs.fit_store import StoredFit
from webapp.models import utcnow

logger = logging.getLogger(__name__)

_RUNNING = threading.Lock()


def needs_fit(fit: StoredFit, last_vote: int) -> bool:
    """True when votes came in after the newest fit (the newest vote id is `last_vote`)
    and it is older than the interval."""
    interval = current_app.config["DOPE_FIT_INTERVAL"]
    if interval <= 0:
        return False
    if fit.created_at is not None and fit.created_at > utcnow() - timedelta(seconds=interval):
        return False
    return last_vote > fit.last_vote_id


def maybe_refit(fit: StoredFit, last_vote: int) -> bool:
    """Start a fit in a background thread of this worker when one is due; return
    whether one was started."""
    if not needs_fit(fit, last_vote) or not _RUNNING.acquire(blocking=False):
        return False
    app = current_app._get_current_object()
    threading.Thread(target=_fit_in_background, args=(app,), daemon=True).start()
    return True


def _fit_in_background(app: Flask) -> None:
    try:
        with app.app_context():
            run_fit()
    except Exception:  # noqa: BLE001 - a failed fit leaves the last one in place; say why
        logger.exception("The periodic fit failed")
    finally:
        _RUNNING.release()
