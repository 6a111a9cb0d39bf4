"""The game's graceful states, each on its own small real server."""

from __future__ import annotations

import pytest
from buildmaker import write_build
from e2e_checks import voter_id_of, wait_for_votes
from e2e_harness import running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    """Two queries: a voter runs out of pairs after at most ten votes."""
    return write_build(tmp_path_factory.mktemp("tiny") / "build", n_queries=2, n_catalog=30)


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    yield ctx.new_page()
    ctx.close()


# States in which the game waits for the voter; "loading" and "advancing" are transient.
SETTLED_JS = "const SETTLED = ['ready', 'done', 'rate-limited', 'error'];"


def play_until_notice(page, limit: int) -> int:
    """Press Right until the game shows a notice instead of a card; return votes cast."""
    page.wait_for_function("() => { " + SETTLED_JS + " return SETTLED.includes("
                           "document.querySelector('[data-game]').dataset.state); }",
                           timeout=15000)
    votes = 0
    while page.get_attribute("[data-game]", "data-state") == "ready":
        assert votes < limit, "the game never stopped serving pairs"
        page.keyboard.press("ArrowRight")
        votes += 1
        page.wait_for_function(
            "n => { " + SETTLED_JS + " const g = document.querySelector('[data-game]');"
            " return g.dataset.unsent === '0' && SETTLED.includes(g.dataset.state)"
            " && document.getElementById('vote-count').textContent === String(n); }",
            arg=votes, timeout=15000)
    return votes


def test_no_pairs_left(page, tmp_path, tiny_build, artifacts):
    with running_server(tmp_path / "srv", build=tiny_build, workers=1) as server:
        page.goto(server.url + "/play")
        votes = play_until_notice(page, limit=10)
        notice = page.locator("[data-notice]")
        assert notice.is_visible()
        assert "every pair" in notice.inner_text()
        assert page.get_by_role("link", name="See the leaderboard").is_visible()
        assert not page.get_by_role("button", name="Dope", exact=True).is_visible()
        page.screenshot(path=str(artifacts / "play-no-pairs-left.png"))
        pairs = server.query("SELECT COUNT(*) FROM issued_token")[0][0]
        assert 1 <= votes == pairs <= 10
        wait_for_votes(server, voter_id_of(page.context, server), votes)


def test_rate_limited(page, tmp_path, tiny_build, artifacts):
    with running_server(tmp_path / "srv", build=tiny_build, workers=1,
                        env={"DOPE_MAX_PAIRS_PER_HOUR": "3"}) as server:
        page.goto(server.url + "/play")
        votes = play_until_notice(page, limit=3)
        assert votes == 3
        assert page.get_attribute("[data-game]", "data-state") == "rate-limited"
        text = page.locator("[data-notice]").inner_text()
        assert "play again in" in text and " min " in text
        page.screenshot(path=str(artifacts / "play-rate-limited.png"))
        wait_for_votes(server, voter_id_of(page.context, server), 3)


def test_never_ready_without_a_card(page, tmp_path, tiny_build):
    """Right after a vote the game says it is between cards, so a key press is never lost."""
    with running_server(tmp_path / "srv", build=tiny_build, workers=1) as server:
        page.goto(server.url + "/play")
        page.wait_for_selector("[data-game][data-state='ready'] .card.is-top", timeout=15000)
        state, has_card, buttons_off = page.evaluate(
            "() => { document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}));"
            " const g = document.querySelector('[data-game]');"
            " return [g.dataset.state, !!document.querySelector('.card.is-top'),"
            " [...g.querySelectorAll('[data-verdict]')].every(b => b.disabled)]; }")
        assert not has_card
        assert state == "advancing"
        assert buttons_off
        page.wait_for_selector("[data-game][data-state='ready'] .card.is-top", timeout=15000)
        wait_for_votes(server, voter_id_of(page.context, server), 1)
