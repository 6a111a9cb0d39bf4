"""The simulated crowd: tastes, voter types, vote files, seeds, bad options.

Builds come from tests/buildmaker.py: real PNG thumbnails, a manifest, catalog.csv
and pairs.jsonl, in the documented format. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from buildmaker import write_build
from click.testing import CliRunner

from engine.cli.main import main
from engine.crowd.campaign import campaign
from engine.crowd.descriptors import describe, similarities
from engine.crowd.plan import plan_campaign
from engine.crowd.simulate import (
    Look,
    Population,
    Voter,
    judge_build,
    new_voter,
    parse_mix,
    resolve_target,
    truth_report,
)
from engine.crowd.taste import SPREAD, load_taste, mean_approval, preset_names
from engine.formats.builddir import BuildDirError, read_build
from engine.formats.votes import read_votes
from engine.stats import wilson_interval

TEST_TASTE = """
name = "test"
description = "moderate approvals, for recovery tests"
[taste]
bias = -1.5
category = 2.0
tone = 1.5
shape = 1.0
[population.activity]
max_votes = 300
"""


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    return write_build(tmp_path_factory.mktemp("crowd") / "build", n_queries=60, n_catalog=120)


@pytest.fixture(scope="module")
def taste_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("taste") / "test.toml"
    path.write_text(TEST_TASTE)
    return path


def judged_for(build, taste="look", mix=None):
    taste = load_taste(taste)
    population = Population.from_taste(taste, mix)
    return judge_build(read_build(build), taste, population), population


def cluster_se(votes, slug: str) -> tuple[float, float, int]:
    """Return (dope rate, voter-clustered standard error, judgments) for a variant."""
    per_voter = defaultdict(lambda: [0, 0])
    for v in votes:
        if v.variant == slug and v.verdict != "skip":
            per_voter[v.ident][0] += v.verdict == "dope"
            per_voter[v.ident][1] += 1
    d = np.array([x[0] for x in per_voter.values()], float)
    n = np.array([x[1] for x in per_voter.values()], float)
    rate = d.sum() / n.sum()
    g = len(n)
    var = ((d - rate * n) ** 2).sum() / n.sum() ** 2 * g / (g - 1)
    return rate, math.sqrt(var), int(n.sum())


# ---------------------------------------------------------------- tastes and truth

def test_presets_load_and_category_taste_reads_category_only(small_build):
    assert {"category", "tone", "pattern", "look"} <= set(preset_names())
    judged, population = judged_for(small_build, "category")
    h = population.params["honest"]
    build = judged.build
    every = [pair for rows in judged.pairs.values() for pair in rows]
    m = np.mean([build.images[q].category == build.images[m].category for q, m in every])

    def crowd(same):  # voters' category weight 4 + 4 * taste_sd * z, centred on m
        sd = np.hypot(h["leniency_sd"], h["taste_sd"] * 4 * (same - m))
        return mean_approval(np.array([4.0 * same - 2.0]), sd, h["lapse"])[0]

    expected = {True: crowd(1.0), False: crowd(0.0)}
    for slug, rows in judged.pairs.items():
        same = [build.images[q].category == build.images[m].category for q, m in rows]
        assert judged.truth[slug] == pytest.approx(np.mean([expected[s] for s in same]))


def test_the_truth_is_the_mean_approval_of_voters_who_differ_in_taste(small_build):
    """Draw honest voters (own weights, own leniency) and average what they approve."""
    import random

    judged, population = judged_for(small_build, "look")
    rng = random.Random(4)
    voters = [new_voter(population, rng) for _ in range(20_000)]
    assert np.std([v.taste for v in voters], axis=0) == pytest.approx(
        [population.params["honest"]["taste_sd"]] * len(SPREAD), rel=0.05)
    lapse = population.params["honest"]["lapse"]
    for slug in judged.real_slugs()[:2]:
        pairs = judged.pairs[slug][:40]
        crowd = np.mean([[v.approval(judged.looks[p]) for v in voters] for p in pairs])
        truth = np.mean(population.honest_truth(
            np.array([judged.looks[p].logit for p in pairs]),
            np.array([judged.looks[p].basis for p in pairs])))
        assert (1 - lapse) * crowd + lapse / 2 == pytest.approx(truth, abs=0.004)
    spread = np.array([judged.looks[p].basis for rows in judged.pairs.values() for p in rows])
    assert spread.std(axis=0).max() > 0.3  # look's voters do disagree on some pairs


def test_the_taste_judges_an_added_image_as_the_build_image_it_shows(small_build):
    """A visitor's photo (PairJudge.add_images): a copy of a build image with its
    category is judged exactly as that image."""
    judged, _ = judged_for(small_build, "look")
    (query, match), *_ = judged.pairs[judged.real_slugs()[0]]
    build = judged.build
    judged.judge.add_images(["photo:copy"], [build.images[query].category],
                            [build.thumbnail_path(query)])
    assert judged.judge.logits(["photo:copy"], [match]) == pytest.approx(
        judged.judge.logits([query], [match]))
    assert judged.judge.basis(["photo:copy"], [match]) == pytest.approx(
        judged.judge.basis([query], [match]))


def test_honest_voters_skip_hard_pairs_more():
    import random

    population, rng = Population(), random.Random(2)
    voter = Voter("honest", 10**6, 0.0, "v")
    flat = np.zeros(len(SPREAD))
    even = sum(voter.decide(Look(0.0, flat), False, population.params, rng) == "skip"
               for _ in range(20_000))
    sure = sum(voter.decide(Look(4.0, flat), False, population.params, rng) == "skip"
               for _ in range(20_000))
    assert even / 20_000 == pytest.approx(population.params["honest"]["skip"], abs=0.006)
    assert sure < even / 4


def test_mean_approval_matches_monte_carlo():
    rng = np.random.default_rng(1)
    e = rng.normal(0, 0.7, 400_000)
    for logit in (-2.0, 0.3, 1.5):
        mc = 0.9 * (1 / (1 + np.exp(-(logit + e)))).mean() + 0.05
        assert mean_approval(np.array([logit]), 0.7, 0.1)[0] == pytest.approx(mc, abs=2e-3)


def test_descriptors_see_tone_shape_and_texture(tmp_path):
    from PIL import Image, ImageDraw

    def garment(name, fill, box, stripes=False):
        img = Image.new("RGB", (256, 256), "white")
        draw = ImageDraw.Draw(img)
        draw.rectangle(box, fill=fill)
        if stripes:
            for x in range(box[0], box[2], 12):
                draw.rectangle([x, box[1], x + 5, box[3]], fill="white")
        img.save(tmp_path / name)
        return tmp_path / name

    paths = [garment("dark.png", (30, 30, 30), (60, 40, 196, 220)),
             garment("dark2.png", (40, 40, 40), (60, 40, 196, 220)),
             garment("pale.png", (190, 190, 190), (60, 40, 196, 220)),
             garment("wide.png", (30, 30, 30), (10, 100, 246, 160)),
             garment("striped.png", (30, 30, 30), (60, 40, 196, 220), stripes=True)]
    a = describe(paths)
    s = similarities(a, np.zeros(4, int), np.arange(1, 5))
    assert s["tone"][0] > 0.7 and s["tone"][1] < 0.05  # dark vs near-dark; dark vs pale
    assert s["shape"][0] == 1.0 and s["shape"][2] < 0.5  # same box; a wide one
    assert s["texture"][0] > s["texture"][3] + 0.2  # plain vs plain; plain vs striped
    assert np.allclose(s["colour"], 1.0)  # grey garments: every pixel in the grey bin


def test_truth_report_ranks_and_gaps(small_build):
    judged, population = judged_for(small_build, "look")
    report = truth_report(judged, load_taste("look"), population)
    assert "crowd's mean approval" in report["truth_is"]
    assert report["taste_logit_sd"]["p90"] >= report["taste_logit_sd"]["median"] > 0
    ranking = report["ranking"]
    assert "random" not in ranking and len(ranking) == 4
    truths = [judged.truth[s] for s in ranking]
    assert truths == sorted(truths, reverse=True)
    assert [g["gap"] for g in report["gaps"]] == pytest.approx(
        [a - b for a, b in zip(truths, truths[1:], strict=False)], abs=1e-5)


def test_crowd_truth_cli_writes_json(small_build, tmp_path):
    out = tmp_path / "truth.json"
    result = CliRunner().invoke(main, ["crowd", "truth", "--build", str(small_build),
                                       "--taste", "tone", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["taste"] == "tone" and report["ranking"][0] in result.output
    assert len(report["gaps"]) == 3


# ---------------------------------------------------------------- recovering the truth

def test_honest_votes_recover_every_true_approval(small_build, taste_file):
    judged, population = judged_for(small_build, str(taste_file))
    # Seed 12: seed 11 drew one variant 4.0 standard errors off once voters got their own
    # tastes; over seeds 100-129 the z-scores had mean 0.0-0.2 and sd 0.83-1.07.
    votes = list(campaign(judged, population, 100_000, seed=12))
    assert len(votes) == 100_000
    for slug in judged.slugs:
        rate, se, n = cluster_se(votes, slug)
        assert 3 * se < 0.02, (slug, n, se)  # enough votes for a two-point test
        assert abs(rate - judged.truth[slug]) < 3 * se, (slug, rate, judged.truth[slug], se)


def test_wrong_truth_is_caught(small_build, taste_file):
    """The recovery check can fail: a crowd with another taste misses this truth."""
    judged, population = judged_for(small_build, str(taste_file))
    other, _ = judged_for(small_build, "category")
    votes = list(campaign(other, population, 30_000, seed=11))
    misses = [slug for slug in judged.slugs
              if abs(cluster_se(votes, slug)[0] - judged.truth[slug])
              > 3 * cluster_se(votes, slug)[1]]
    assert misses


# ---------------------------------------------------------------- voter types

def votes_by_kind(build, mix, n=20_000, seed=3, taste="look"):
    judged, population = judged_for(build, taste, parse_mix(mix))
    return judged, population, list(campaign(judged, population, n, seed))


def test_yes_sayer_and_random_clicker_on_control_pairs(small_build):
    _, population, votes = votes_by_kind(small_build, "yes=0.5,random=0.5")
    rates = {}
    for kind in ("yes", "random"):
        control = [v for v in votes if v.voter.kind == kind and v.variant == "random"]
        assert len(control) > 500
        rates[kind] = np.mean([v.verdict == "dope" for v in control])
    assert rates["yes"] == pytest.approx(population.params["yes"]["dope_rate"], abs=0.04)
    assert rates["random"] == pytest.approx(0.5, abs=0.05)


def test_adversary_pushes_its_target_and_drops_its_cookie(small_build):
    judged, population, votes = votes_by_kind(small_build, "adversary=1")
    target = resolve_target(judged, population)
    assert target == judged.ranking()[-1]  # default: the variant the taste likes least
    target_pairs = set(judged.pairs[target])
    on_target = [v for v in votes if (v.query_id, v.match_id) in target_pairs]
    others = [v for v in votes if (v.query_id, v.match_id) not in target_pairs]
    assert on_target and all(v.verdict == "dope" for v in on_target)
    assert others and all(v.verdict == "nope" for v in others)
    every = population.params["adversary"]["cookie_every"]
    per_ident = Counter(v.ident for v in votes)
    assert max(per_ident.values()) <= every
    assert len(per_ident) > len({id(v.voter) for v in votes})


def test_tiring_voter_lapses_more_as_it_votes():
    population = Population()
    voter = Voter("tiring", 1000, 0.0, "x")
    t = population.params["tiring"]
    assert voter.lapse(population.params) == t["lapse_start"]
    voter.cast = t["half_life"]
    assert voter.lapse(population.params) == pytest.approx((t["lapse_start"] + t["lapse_end"]) / 2)
    import random

    rng = random.Random(0)
    fresh, tired = Voter("tiring", 1000, 0.0, "a"), Voter("tiring", 1000, 0.0, "b", cast=600)
    # On a pair the taste is sure about (logit -6), only lapses say dope.
    sure_nope = Look(-6.0, np.zeros(len(SPREAD)))
    fresh_dope = sum(fresh.decide(sure_nope, False, population.params, rng) == "dope"
                     for _ in range(4000))
    tired_dope = sum(tired.decide(sure_nope, False, population.params, rng) == "dope"
                     for _ in range(4000))
    assert tired_dope > 3 * fresh_dope
    assert tired.decision_ms(population.params, random.Random(1)) < \
        fresh.decision_ms(population.params, random.Random(1))


def test_activity_is_heavy_tailed():
    import random

    population, rng = Population(), random.Random(5)
    budgets = sorted((new_voter(population, rng).budget for _ in range(5000)), reverse=True)
    assert np.median(budgets) <= 5
    assert sum(budgets[:500]) > 0.4 * sum(budgets)  # the top 10% cast over 40%
    assert max(budgets) <= population.params["activity"]["max_votes"]


def test_a_voter_never_sees_an_image_pair_twice(small_build):
    _, _, votes = votes_by_kind(small_build, "honest=1", n=5000)
    seen = Counter((v.ident, v.query_id, v.match_id) for v in votes)
    assert max(seen.values()) == 1
    per_variant_query = Counter((v.ident, v.variant, v.query_id) for v in votes)
    assert max(per_variant_query.values()) == 1


def test_allocation_follows_the_game(small_build):
    judged, population, votes = votes_by_kind(small_build, "honest=1", n=10_000)
    counts = Counter(v.variant for v in votes)
    real = [counts[s] for s in judged.real_slugs()]
    assert max(real) - min(real) <= 0.02 * 10_000
    assert counts["random"] / 10_000 == pytest.approx(
        population.params["game"]["control_share"], abs=0.02)


# ---------------------------------------------------------------- files and seeds

def run_votes(build, out, *extra):
    return CliRunner().invoke(main, ["crowd", "votes", "--build", str(build), "--taste",
                                     "look", "--votes", "500", "--out", str(out), *extra])


def test_same_seed_same_file_and_the_reader_takes_it(small_build, tmp_path):
    files = {}
    for name, seed in (("a.jsonl", "4"), ("b.jsonl", "4"), ("c.jsonl", "5"), ("a.csv", "4")):
        result = run_votes(small_build, tmp_path / name, "--seed", seed,
                           "--mix", "honest=0.6,yes=0.2,random=0.1,adversary=0.1")
        assert result.exit_code == 0, result.output
        files[name] = (tmp_path / name).read_bytes()
    assert files["a.jsonl"] == files["b.jsonl"] != files["c.jsonl"]
    jsonl, csv_ = read_votes(tmp_path / "a.jsonl"), read_votes(tmp_path / "a.csv")
    assert len(jsonl.votes) == 500 and jsonl.votes == csv_.votes
    assert jsonl.header["simulated"]["seed"] == 4
    build = read_build(small_build)
    pairs = {(p.query_id, p.match_id, p.variant) for p in build.pairs}
    assert all((v.query_id, v.match_id, v.variant) in pairs for v in jsonl.votes)
    assert {v.build_id for v in jsonl.votes} == {build.build_id}


@pytest.mark.parametrize("content, message", [
    ('{"kind": "something-else"}\n', "not a Dope or Nope vote export"),
    ('{"kind": "dope-or-nope-votes", "format_version": 9}\n', "format_version 9"),
    ('{"kind": "dope-or-nope-votes", "format_version": 1}\n{"vote_id": 1}\n', "missing"),
    ('{"kind": "dope-or-nope-votes", "format_version": 1}\nnot json\n', "line 2"),
    ("", "empty file"),
])
def test_vote_reader_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "votes.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_votes(path)


def test_vote_reader_refuses_bad_csv_and_names(tmp_path):
    (tmp_path / "v.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_votes(tmp_path / "v.csv")
    with pytest.raises(ValueError, match=".jsonl or .csv"):
        read_votes(tmp_path / "v.txt")


# ---------------------------------------------------------------- bad options

@pytest.mark.parametrize("args, message", [
    (["--taste", "nosuch"], "unknown taste 'nosuch'"),
    (["--taste", "missing.toml"], "taste file not found"),
    (["--mix", "honest=0.5,yes=0.1"], "must sum to 1"),
    (["--mix", "honest=0.9,cheater=0.1"], "not TYPE=SHARE"),
    (["--mix", "honest=abc"], "not a number"),
    (["--out", "votes.txt"], ".jsonl or .csv"),
])
def test_crowd_votes_bad_options(small_build, tmp_path, args, message):
    base = {"--taste": "look", "--out": str(tmp_path / "v.jsonl")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = ["crowd", "votes", "--build", str(small_build), "--votes", "10"]
    for flag, value in base.items():
        argv += [flag, value]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "v.jsonl").exists()


def test_bad_taste_file_and_population(tmp_path, small_build):
    bad = tmp_path / "bad.toml"
    bad.write_text("[taste]\nsparkle = 2\n")
    with pytest.raises(ValueError, match="unknown taste weight"):
        load_taste(str(bad))
    bad.write_text("[taste]\nbias = 1\n[population.honest]\nlapse = 3\n")
    with pytest.raises(ValueError, match=r"honest.lapse must be a number in \[0.0, 1.0\]"):
        Population.from_taste(load_taste(str(bad)))
    bad.write_text("[taste]\nbias = 1\n[population.adversary]\ntarget = 'nosuch'\n")
    judged, population = judged_for(small_build, str(bad), {"adversary": 1.0})
    with pytest.raises(ValueError, match="not a real variant"):
        resolve_target(judged, population)


@pytest.mark.parametrize("url, message", [
    ("http://127.0.0.1:{port}", "cannot reach"),
    ("https://127.0.0.1:8000", "must be http://"),
    ("http://192.0.2.1:8000", "only plays servers on this machine"),
])
def test_crowd_play_refuses_unreachable_and_remote_urls(small_build, url, message):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    result = CliRunner().invoke(main, ["crowd", "play", "--build", str(small_build), "--url",
                                       url.format(port=port), "--votes", "5"])
    assert result.exit_code != 0 and message in result.output, result.output


def test_read_build_refuses_a_non_build(tmp_path):
    with pytest.raises(BuildDirError, match="no manifest.json"):
        read_build(tmp_path)


# ---------------------------------------------------------------- campaign plans

def test_engine_wilson_equals_the_leaderboards():
    from webapp.stats.ranking import wilson_interval as board_wilson

    for k, n in ((0, 0), (0, 5), (3, 10), (70, 100), (999, 1000)):
        assert wilson_interval(k, n) == pytest.approx(board_wilson(k, n))


def test_plan_reports_when_the_true_best_clears_the_second(small_build, tmp_path):
    clear = tmp_path / "clear.toml"
    clear.write_text("[taste]\nbias = -1.0\ncategory = 3.0\n")
    judged, population = judged_for(small_build, str(clear))
    result = plan_campaign(judged, population, campaigns=3, max_votes=3000)
    assert (result.best, result.second) == tuple(judged.ranking()[:2])
    assert result.gap == pytest.approx(judged.truth[result.best] - judged.truth[result.second])
    assert len(result.separated_at) == 3
    assert all(n is None or 0 < n <= 3000 for n in result.separated_at)
    # Campaign i is seed i: the same seeds give the same answers.
    again = plan_campaign(judged, population, campaigns=3, max_votes=3000)
    assert again.separated_at == result.separated_at
