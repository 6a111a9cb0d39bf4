/* Dope or Nope: the swipe game. Vanilla JS, no dependencies, no external files.
 *
 * One card is on top, the next one (already fetched, images already decoded) waits
 * beneath it, so a vote feels instant. Votes go to an outbox kept in localStorage
 * and are delivered in the background, one at a time, retried with the SAME token
 * after a network error: the token is single-use, so a resend can never count twice,
 * and a 409 on a resend means the first attempt was stored.
 */
(function () {
  "use strict";

  var game = document.querySelector("[data-game]");
  if (!game) return;

  var PAIR_URL = game.getAttribute("data-pair-url");
  var VOTE_URL = game.getAttribute("data-vote-url");
  var OUTBOX_PREFIX = "dope-or-nope:unsent:";
  var KEY_VERDICTS = { ArrowRight: "dope", ArrowLeft: "nope", ArrowDown: "skip", s: "skip", S: "skip" };
  var SWIPE_FRACTION = 0.25; // of the card's width
  var SWIPE_MIN_PX = 80;
  var FLICK_PX_PER_MS = 0.55;
  var IMAGE_TIMEOUT_MS = 8000;

  var deck = game.querySelector("[data-deck]");
  var template = document.getElementById("card-template");
  var placeholder = deck.querySelector(".card-placeholder");
  var countEl = document.getElementById("vote-count");
  var announceEl = game.querySelector("[data-announce]");
  var notice = game.querySelector("[data-notice]");
  var noticeTitle = game.querySelector("[data-notice-title]");
  var noticeText = game.querySelector("[data-notice-text]");
  var retryButton = game.querySelector("[data-retry]");
  var voteButtons = Array.prototype.slice.call(game.querySelectorAll("[data-verdict]"));
  var reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

  var confirmed = parseInt(game.getAttribute("data-votes-cast"), 10) || 0;
  var top = null; // the card being judged: {pair, key, el, shownAt}
  var upcoming = null; // Promise of the next result from /api/pair
  var outbox = loadOutbox(); // votes not yet acknowledged, oldest first
  var draining = null; // Promise while the outbox is being delivered
  var idleWaiters = [];
  var countdownTimer = null;
  var announceTimer = null;

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  function pairKey(pair) {
    return pair.query.url + " " + pair.match.url;
  }

  /* ---------- outbox: votes survive a reload or a dropped connection ---------- */

  function loadOutbox() {
    var items = [];
    try {
      for (var i = 0; i < localStorage.length; i++) {
        var k = localStorage.key(i);
        if (k && k.indexOf(OUTBOX_PREFIX) === 0) {
          var item = JSON.parse(localStorage.getItem(k));
          if (item && typeof item.token === "string") {
            item.storeKey = k;
            // Queued before a reload: the page's votes_cast may already include it.
            item.restored = true;
            items.push(item);
          }
        }
      }
    } catch (e) { /* storage unavailable: the outbox lives in memory only */ }
    items.sort(function (a, b) { return (a.queuedAt || 0) - (b.queuedAt || 0); });
    return items;
  }

  function remember(item) {
    var salt = new Uint32Array(2);
    crypto.getRandomValues(salt);
    item.storeKey = OUTBOX_PREFIX + Date.now().toString(36) + salt[0].toString(36) + salt[1].toString(36);
    try {
      localStorage.setItem(item.storeKey, JSON.stringify({
        token: item.token, verdict: item.verdict, decision_ms: item.decision_ms,
        key: item.key, queuedAt: item.queuedAt
      }));
    } catch (e) { /* in memory only */ }
  }

  function forget(item) {
    try { localStorage.removeItem(item.storeKey); } catch (e) { /* nothing stored */ }
  }

  function renderCount() {
    var fresh = outbox.filter(function (item) { return !item.restored; }).length;
    countEl.textContent = String(confirmed + fresh);
    game.setAttribute("data-unsent", String(outbox.length));
  }

  function retryAfterMs(res, body) {
    var s = Number(body && body.retry_after);
    if (!isFinite(s) || s <= 0) s = Number(res.headers.get("Retry-After"));
    if (!isFinite(s) || s <= 0) s = 1;
    return Math.min(s, 3600) * 1000;
  }

  /* Deliver one vote; resolve {stored, votesCast} or {stored: false, error}. */
  async function deliver(item) {
    var backoff = 400;
    var serverErrors = 0;
    var body = JSON.stringify({ token: item.token, verdict: item.verdict, decision_ms: item.decision_ms });
    for (;;) {
      var res;
      try {
        res = await fetch(VOTE_URL, {
          method: "POST", body: body, credentials: "same-origin", cache: "no-store", keepalive: true,
          headers: { "Content-Type": "application/json", "Accept": "application/json" }
        });
      } catch (networkError) {
        // The vote may or may not have arrived; resending the same token is safe.
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 15000);
        continue;
      }
      var data = await res.json().catch(function () { return {}; });
      if (res.status === 201) {
        return { stored: true, votesCast: Number.isInteger(data.votes_cast) ? data.votes_cast : null };
      }
      if (res.status === 409) return { stored: true, votesCast: null }; // an earlier attempt counted
      if (res.status === 429) { await sleep(retryAfterMs(res, data)); continue; }
      if (res.status >= 500 && serverErrors++ < 8) {
        // 503 says when to come back; other 5xx back off. The token stays the same.
        await sleep(res.status === 503 ? retryAfterMs(res, data) : backoff);
        backoff = Math.min(backoff * 2, 15000);
        continue;
      }
      return { stored: false, status: res.status, error: data.error || "" };
    }
  }

  async function drainOutbox() {
    while (outbox.length) {
      var item = outbox[0];
      var outcome = await deliver(item);
      outbox.shift();
      forget(item);
      if (outcome.stored) {
        if (outcome.votesCast !== null) confirmed = outcome.votesCast;
        else if (!item.restored) confirmed += 1; // stored by an attempt whose answer was lost
      } else {
        announce(outcome.status === 400
          ? "That pair had expired, so one vote wasn't counted."
          : "One vote couldn't be recorded.");
      }
      renderCount();
    }
  }

  function pump() {
    if (!draining) {
      draining = drainOutbox().finally(function () {
        draining = null;
        var waiters = idleWaiters;
        idleWaiters = [];
        waiters.forEach(function (resolve) { resolve(); });
      });
    }
    return draining;
  }

  function outboxIdle(maxMs) {
    if (!outbox.length && !draining) return Promise.resolve();
    var idle = new Promise(function (resolve) { idleWaiters.push(resolve); });
    return maxMs ? Promise.race([idle, sleep(maxMs)]) : idle;
  }

  /* ---------- pairs: fetch ahead, decode the images before showing ---------- */

  function loadImage(url, alt) {
    var img = new Image();
    img.alt = alt;
    img.draggable = false;
    img.decoding = "async";
    var loaded = new Promise(function (resolve) {
      img.onload = function () { img.decode().catch(function () {}).then(resolve); };
      img.onerror = resolve;
    });
    img.src = url;
    return Promise.race([loaded, sleep(IMAGE_TIMEOUT_MS)]).then(function () { return img; });
  }

  function buildCard(pair, images) {
    var el = template.content.firstElementChild.cloneNode(true);
    el.querySelector('[data-slot="query"]').appendChild(images[0]);
    el.querySelector('[data-slot="match"]').appendChild(images[1]);
    el.classList.add("is-next");
    deck.appendChild(el);
    var card = { pair: pair, key: pairKey(pair), el: el, shownAt: 0 };
    attachDrag(card);
    return card;
  }

  async function requestPair() {
    var res, data;
    for (var attempt = 0; ; attempt++) {
      try {
        res = await fetch(PAIR_URL, {
          credentials: "same-origin", cache: "no-store", headers: { "Accept": "application/json" }
        });
      } catch (networkError) {
        if (attempt < 2) { await sleep(500 * (attempt + 1)); continue; }
        return { kind: "offline" };
      }
      data = (await res.json().catch(function () { return null; })) || {};
      if (res.status === 503 && attempt < 3) { await sleep(retryAfterMs(res, data)); continue; }
      break;
    }
    if (res.status === 200 && data.token && data.query && data.match) return { kind: "pair", pair: data };
    if (res.status === 404) return { kind: "done", message: data.message };
    if (res.status === 429) return { kind: "rate-limited", waitMs: retryAfterMs(res, data), message: data.message };
    return { kind: "error", status: res.status, message: data.message };
  }

  /* Fetch a pair and render it under the top card, images ready. */
  async function obtainPair(afterVotes) {
    // The server learns of a vote only when it arrives; asking before that could
    // bring back the very pair still waiting in the outbox.
    await outboxIdle(afterVotes ? 0 : 1200);
    var unsettled = outbox.map(function (item) { return item.key; });
    if (top) unsettled.push(top.key);
    var result = await requestPair();
    result.fetchedAt = Date.now();
    if (result.kind !== "pair") return result;
    var images = await Promise.all([
      loadImage(result.pair.query.url, "The item you're looking at"),
      loadImage(result.pair.match.url, "A suggested look-alike")
    ]);
    result.card = buildCard(result.pair, images);
    result.maybeRepeat = !afterVotes && unsettled.indexOf(result.card.key) !== -1;
    return result;
  }

  function prefetch() {
    if (!upcoming) upcoming = obtainPair(false);
  }

  async function advance() {
    prefetch();
    var slow = setTimeout(function () { setState("loading"); }, 120);
    var result = await upcoming;
    upcoming = null;
    if (result.kind === "pair" && result.maybeRepeat) {
      // Issued before the server saw the vote on it: drop it and ask again afterwards.
      result.card.el.remove();
      upcoming = obtainPair(true);
      result = await upcoming;
      upcoming = null;
    }
    if ((result.kind === "offline" || result.kind === "error") && Date.now() - result.fetchedAt > 1500) {
      // A failure from a while ago, while fetching ahead: try once more before complaining.
      upcoming = obtainPair(false);
      result = await upcoming;
      upcoming = null;
    }
    clearTimeout(slow);
    if (result.kind === "pair") {
      promote(result.card);
      prefetch();
    } else {
      showTrouble(result);
    }
  }

  function promote(card) {
    top = card;
    placeholder.hidden = true;
    card.el.classList.remove("is-next");
    card.el.classList.add("is-top");
    if (!deck.querySelector(".is-leaving")) card.el.classList.add("is-entering");
    card.el.setAttribute("tabindex", "0");
    card.shownAt = performance.now();
    setState("ready");
  }

  /* ---------- states ---------- */

  function setState(state) {
    game.setAttribute("data-state", state);
    var ready = state === "ready";
    voteButtons.forEach(function (b) { b.disabled = !ready; });
    if (state === "loading" && !top) placeholder.hidden = false;
    var troubled = state === "done" || state === "rate-limited" || state === "error";
    notice.hidden = !troubled;
    if (troubled) notice.setAttribute("role", state === "error" ? "alert" : "status");
  }

  function showTrouble(result) {
    clearInterval(countdownTimer);
    retryButton.hidden = true;
    if (result.kind === "done") {
      noticeTitle.textContent = "You've judged every pair!";
      noticeText.textContent = "Thanks, that's all we have for now. See how the models are doing.";
      setState("done");
    } else if (result.kind === "rate-limited") {
      var until = result.fetchedAt + result.waitMs;
      noticeTitle.textContent = "Time for a breather";
      // The clock ticks for the eyes only; screen readers get one stable phrase.
      var clock = document.createElement("span");
      clock.setAttribute("aria-hidden", "true");
      var spoken = document.createElement("span");
      spoken.className = "visually-hidden";
      var minutes = Math.ceil(result.waitMs / 60000);
      spoken.textContent = "about " + minutes + (minutes === 1 ? " minute" : " minutes");
      noticeText.textContent = "You've cast a lot of votes. You can play again in ";
      noticeText.append(clock, spoken, ".");
      var tick = function () {
        var left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
        var m = Math.floor(left / 60);
        var s = left % 60;
        clock.textContent = (m ? m + " min " : "") + s + " s";
        if (left <= 0) {
          clearInterval(countdownTimer);
          setState("loading");
          advance();
        }
      };
      tick();
      countdownTimer = setInterval(tick, 1000);
      setState("rate-limited");
    } else {
      noticeTitle.textContent = result.kind === "offline" ? "You seem to be offline" : "Something went wrong";
      noticeText.textContent = "We couldn't load the next pair. Your votes so far are safe.";
      retryButton.hidden = false;
      setState("error");
    }
  }

  retryButton.addEventListener("click", function () {
    setState("loading");
    advance();
  });

  window.addEventListener("online", function () {
    if (game.getAttribute("data-state") === "error") {
      setState("loading");
      advance();
    }
  });

  function announce(text) {
    announceEl.textContent = text;
    clearTimeout(announceTimer);
    announceTimer = setTimeout(function () { announceEl.textContent = ""; }, 6000);
  }

  /* ---------- voting ---------- */

  function vote(verdict, drag) {
    if (!top || game.getAttribute("data-state") !== "ready") return;
    var card = top;
    top = null;
    // Between cards: nothing to judge until the next one is promoted (or a notice shows).
    setState("advancing");
    var item = {
      token: card.pair.token, verdict: verdict, key: card.key, queuedAt: Date.now(),
      decision_ms: Math.max(0, Math.round(performance.now() - card.shownAt))
    };
    remember(item);
    outbox.push(item);
    renderCount();
    pump();
    flyOff(card.el, verdict, drag);
    advance();
  }

  function flyOff(el, verdict, drag) {
    el.removeAttribute("tabindex");
    el.classList.remove("is-top", "is-dragging", "is-entering");
    el.classList.add("is-leaving");
    el.style.setProperty("--dope-opacity", verdict === "dope" ? "1" : "0");
    el.style.setProperty("--nope-opacity", verdict === "nope" ? "1" : "0");
    if (reducedMotion.matches) {
      el.remove();
      return;
    }
    var dir = verdict === "dope" ? 1 : verdict === "nope" ? -1 : 0;
    var dy = drag ? drag.dy * 0.35 : 0;
    var distance = window.innerWidth / 2 + el.offsetWidth * 1.1;
    el.style.transform = dir
      ? "translate(" + dir * distance + "px," + (dy + 40) + "px) rotate(" + dir * 24 + "deg)"
      : "translateY(70px) scale(.88)";
    el.style.opacity = dir ? "1" : "0";
    var done = function () { el.remove(); };
    el.addEventListener("transitionend", function (e) { if (e.propertyName === "transform") done(); });
    setTimeout(done, 600);
  }

  /* ---------- swiping ---------- */

  function setDrag(el, dx, dy) {
    var threshold = Math.max(SWIPE_MIN_PX, el.offsetWidth * SWIPE_FRACTION);
    var strength = Math.min(1, Math.abs(dx) / threshold);
    var angle = Math.max(-18, Math.min(18, dx * 0.06));
    el.style.transform = "translate(" + dx + "px," + dy * 0.35 + "px) rotate(" + angle + "deg)";
    el.style.setProperty("--drag", strength.toFixed(3));
    el.style.setProperty("--dope-opacity", dx > 0 ? strength.toFixed(3) : "0");
    el.style.setProperty("--nope-opacity", dx < 0 ? strength.toFixed(3) : "0");
    el.classList.toggle("lean-dope", dx > 0);
    el.classList.toggle("lean-nope", dx < 0);
  }

  function springBack(el) {
    el.classList.remove("lean-dope", "lean-nope");
    el.style.transform = "";
    el.style.setProperty("--drag", "0");
    el.style.setProperty("--dope-opacity", "0");
    el.style.setProperty("--nope-opacity", "0");
  }

  function attachDrag(card) {
    var el = card.el;
    var pointerId = null;
    var startX = 0, startY = 0, lastX = 0, lastT = 0, vx = 0;

    el.addEventListener("pointerdown", function (e) {
      if (top !== card || pointerId !== null) return;
      if (e.pointerType === "mouse" && e.button !== 0) return;
      pointerId = e.pointerId;
      try { el.setPointerCapture(pointerId); } catch (err) { /* pointer already gone */ }
      startX = lastX = e.clientX;
      startY = e.clientY;
      lastT = e.timeStamp;
      vx = 0;
      el.classList.remove("is-entering");
      el.classList.add("is-dragging");
    });

    el.addEventListener("pointermove", function (e) {
      if (e.pointerId !== pointerId) return;
      var dt = e.timeStamp - lastT;
      if (dt > 0) vx = 0.7 * ((e.clientX - lastX) / dt) + 0.3 * vx;
      lastX = e.clientX;
      lastT = e.timeStamp;
      setDrag(el, e.clientX - startX, e.clientY - startY);
    });

    function release(e) {
      if (e.pointerId !== pointerId) return;
      pointerId = null;
      el.classList.remove("is-dragging");
      var dx = e.clientX - startX;
      var dy = e.clientY - startY;
      var threshold = Math.max(SWIPE_MIN_PX, el.offsetWidth * SWIPE_FRACTION);
      var flicked = Math.abs(vx) > FLICK_PX_PER_MS && Math.abs(dx) > 30 && vx * dx > 0;
      if (e.type === "pointerup" && top === card && (Math.abs(dx) >= threshold || flicked)) {
        vote(dx > 0 ? "dope" : "nope", { dx: dx, dy: dy });
      } else {
        springBack(el);
      }
    }
    el.addEventListener("pointerup", release);
    el.addEventListener("pointercancel", release);
    el.addEventListener("dragstart", function (e) { e.preventDefault(); });
  }

  /* ---------- buttons and keys ---------- */

  voteButtons.forEach(function (button) {
    button.addEventListener("click", function () {
      vote(button.getAttribute("data-verdict"), null);
    });
  });

  function pressFeedback(verdict) {
    var button = game.querySelector('[data-verdict="' + verdict + '"]');
    if (!button) return;
    button.classList.add("is-pressed");
    setTimeout(function () { button.classList.remove("is-pressed"); }, 140);
  }

  document.addEventListener("keydown", function (e) {
    if (e.repeat || e.altKey || e.ctrlKey || e.metaKey) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    var verdict = KEY_VERDICTS[e.key];
    if (!verdict) return;
    e.preventDefault();
    if (!top || game.getAttribute("data-state") !== "ready") return;
    pressFeedback(verdict);
    vote(verdict, null);
  });

  /* ---------- start ---------- */

  renderCount();
  if (outbox.length) pump();
  setState("loading");
  advance();
})();
