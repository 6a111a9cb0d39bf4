"""The game in real Chromium against a real gunicorn: every way to vote lands in the DB."""

from __future__ import annotations

import time

import pytest
from e2e_checks import (
    assert_leaderboard_counts_votes,
    assert_on_leaderboard,
    leaderboard,
    voter_id_of,
    votes_of,
    wait_for_votes,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DESKTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 2}


@pytest.fixture
def context(browser):
    ctx = browser.new_context(**DESKTOP)
    ctx.offline_test = False
    yield ctx
    ctx.close()


@pytest.fixture
def page(context):
    p = context.new_page()
    errors = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    # Console errors catch CSP refusals and failed loads too.
    p.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield p
    if context.offline_test:
        errors = [e for e in errors if "ERR_INTERNET_DISCONNECTED" not in e]
    assert not errors, f"errors on the page: {errors}"


def open_game(page, server):
    page.goto(server.url + "/play")
    wait_ready(page)


def wait_ready(page):
    page.wait_for_selector("[data-game][data-state='ready'] .card.is-top", timeout=15000)


def top_card_id(page) -> str:
    """Return the identity of the card on top (its images' URLs)."""
    return page.eval_on_selector(".card.is-top", "c => [...c.querySelectorAll('img')]"
                                 ".map(i => i.getAttribute('src')).join(' ')")


def wait_next_card(page, previous: str) -> None:
    page.wait_for_function(
        "prev => { const c = document.querySelector('[data-state=ready] .card.is-top');"
        " return c && [...c.querySelectorAll('img')].map(i => i.getAttribute('src')).join(' ')"
        " !== prev; }", arg=previous, timeout=15000)


def mouse_drag(page, dx: float, *, steps: int = 15, pause_at_end=None):
    box = page.locator(".card.is-top").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x + dx * i / steps, y + 10 * i / steps)
    if pause_at_end:
        pause_at_end()
    page.mouse.up()


def card_style(page) -> dict:
    return page.eval_on_selector(".card.is-top", """c => ({
        transform: getComputedStyle(c).transform,
        dope: getComputedStyle(c.querySelector('.stamp-dope')).opacity,
        nope: getComputedStyle(c.querySelector('.stamp-nope')).opacity })""")


def test_landing_page_leads_to_the_game(page, live_server):
    page.goto(live_server.url + "/")
    play = page.get_by_role("link", name="Play Dope or Nope")
    assert play.count() == 1
    assert "votes" in page.locator(".hero-why").inner_text()
    play.click()
    page.wait_for_url("**/play")
    wait_ready(page)
    assert page.locator(".card.is-top img").count() == 2


def test_drag_right_is_a_dope(page, context, live_server):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    before = leaderboard(live_server)
    first = top_card_id(page)
    seen = {}

    def look_mid_drag():
        seen.update(card_style(page))

    time.sleep(0.3)
    mouse_drag(page, 320, pause_at_end=look_mid_drag)
    # While dragged, the card followed the pointer and the DOPE stamp showed.
    assert seen["transform"] not in ("none", ""), seen
    assert float(seen["dope"]) > 0.9 and float(seen["nope"]) == 0, seen
    [(verdict, decision_ms, slug, _)] = wait_for_votes(live_server, voter, 1)
    assert verdict == "dope"
    assert decision_ms is not None and decision_ms >= 250
    wait_next_card(page, first)
    assert page.locator("#vote-count").inner_text() == "1"
    assert_on_leaderboard(before, assert_leaderboard_counts_votes(live_server), slug, "dope")


def test_short_drag_springs_back_without_a_vote(page, context, live_server):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    first = top_card_id(page)
    mouse_drag(page, 40)
    page.wait_for_function("() => getComputedStyle(document.querySelector('.card.is-top'))"
                           ".transform === 'none'", timeout=5000)
    time.sleep(0.5)
    assert votes_of(live_server, voter) == []
    assert top_card_id(page) == first
    assert page.locator("#vote-count").inner_text() == "0"


def test_drag_left_is_a_nope(page, context, live_server):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    seen = {}
    mouse_drag(page, -300, pause_at_end=lambda: seen.update(card_style(page)))
    assert float(seen["nope"]) > 0.9 and float(seen["dope"]) == 0, seen
    [(verdict, *_)] = wait_for_votes(live_server, voter, 1)
    assert verdict == "nope"


def test_arrow_left_is_a_nope(page, context, live_server):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    before = leaderboard(live_server)
    page.keyboard.press("ArrowLeft")
    [(verdict, _, slug, _)] = wait_for_votes(live_server, voter, 1)
    assert verdict == "nope"
    assert_on_leaderboard(before, assert_leaderboard_counts_votes(live_server), slug, "nope")


def test_keys_right_down_and_s(page, context, live_server):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    for key in ("ArrowRight", "ArrowDown", "s"):
        current = top_card_id(page)
        page.keyboard.press(key)
        wait_next_card(page, current)
    assert [v for v, *_ in wait_for_votes(live_server, voter, 3)] == ["dope", "skip", "skip"]


@pytest.mark.parametrize("button, verdict", [("Dope", "dope"), ("Nope", "nope"),
                                             ("Can't tell", "skip")])
def test_buttons(page, context, live_server, button, verdict):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    before = leaderboard(live_server)
    page.get_by_role("button", name=button, exact=True).click()
    [(got, decision_ms, slug, _)] = wait_for_votes(live_server, voter, 1)
    assert got == verdict and decision_ms is not None
    assert_on_leaderboard(before, assert_leaderboard_counts_votes(live_server), slug, verdict)


def test_every_vote_is_a_new_pair_and_the_counter_follows(page, context, live_server):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    shown = []
    for i in range(12):
        current = top_card_id(page)
        shown.append(current)
        page.get_by_role("button", name="Dope" if i % 2 else "Nope", exact=True).click()
        wait_next_card(page, current)
    rows = wait_for_votes(live_server, voter, 12)
    assert len({pair for *_, pair in rows}) == 12
    assert len(set(shown)) == 12
    page.wait_for_function("() => document.getElementById('vote-count').textContent === '12'")
    page.wait_for_selector("[data-game][data-unsent='0']")
    page.reload()
    wait_ready(page)
    page.wait_for_selector("[data-game][data-unsent='0']")
    assert page.locator("#vote-count").inner_text() == "12"
    time.sleep(0.3)
    assert len(votes_of(live_server, voter)) == 12


def test_touch_swipe_on_a_phone(browser, live_server, artifacts):
    ctx = browser.new_context(**PHONE)
    try:
        page = ctx.new_page()
        open_game(page, live_server)
        voter = voter_id_of(ctx, live_server)
        box = page.locator(".card.is-top").bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        cdp = ctx.new_cdp_session(page)
        cdp.send("Input.dispatchTouchEvent",
                 {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
        for i in range(1, 13):
            cdp.send("Input.dispatchTouchEvent",
                     {"type": "touchMove", "touchPoints": [{"x": x - 20 * i, "y": y + i}]})
        page.screenshot(path=str(artifacts / "play-phone-swiping.png"))
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        [(verdict, *_)] = wait_for_votes(live_server, voter, 1)
        assert verdict == "nope"
    finally:
        ctx.close()


def test_a_vote_cast_offline_arrives_once_back_online(page, context, live_server):
    open_game(page, live_server)
    voter = voter_id_of(context, live_server)
    context.offline_test = True  # failed fetches while offline are expected
    context.set_offline(True)
    page.get_by_role("button", name="Dope", exact=True).click()
    time.sleep(1.5)
    assert votes_of(live_server, voter) == []
    assert page.locator("[data-game]").get_attribute("data-unsent") == "1"
    context.set_offline(False)
    [(verdict, *_)] = wait_for_votes(live_server, voter, 1, timeout=30)
    assert verdict == "dope"
    page.wait_for_selector("[data-game][data-unsent='0']", timeout=10000)
    time.sleep(0.5)
    assert len(votes_of(live_server, voter)) == 1


@pytest.mark.parametrize("name, options", [("desktop", DESKTOP), ("phone", PHONE)])
def test_screenshots(browser, live_server, artifacts, name, options):
    ctx = browser.new_context(**options)
    try:
        page = ctx.new_page()
        page.goto(live_server.url + "/")
        page.screenshot(path=str(artifacts / f"landing-{name}.png"))
        open_game(page, live_server)
        time.sleep(0.4)  # let the entrance animation finish
        page.screenshot(path=str(artifacts / f"play-{name}.png"))
        # Everything that matters fits on one screen: both images and the three buttons.
        height = options["viewport"]["height"]
        for sel in (".card.is-top img >> nth=0", ".card.is-top img >> nth=1",
                    "[data-verdict='nope']", "[data-verdict='dope']", "[data-verdict='skip']"):
            box = page.locator(sel).bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= height, (sel, box)
        if name == "desktop":
            mouse_drag(page, 160, pause_at_end=lambda: page.screenshot(
                path=str(artifacts / "play-desktop-dragging.png")))
    finally:
        ctx.close()


def test_reduced_motion_votes_without_flying_cards(browser, live_server):
    ctx = browser.new_context(**DESKTOP, reduced_motion="reduce")
    try:
        page = ctx.new_page()
        open_game(page, live_server)
        voter = voter_id_of(ctx, live_server)
        first = top_card_id(page)
        page.keyboard.press("ArrowRight")
        wait_next_card(page, first)
        # The judged card is gone at once instead of animating away.
        assert page.locator(".card.is-leaving").count() == 0
        [(verdict, *_)] = wait_for_votes(live_server, voter, 1)
        assert verdict == "dope"
    finally:
        ctx.close()
