import pytest

from webapp.ranking import make_row, rank_rows, votes_to_separate, wilson_interval


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (8, 10, 0.4902, 0.9433),   # hand-computed with z = 1.96
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (50, 100, 0.4038, 0.5962),
    (1, 1, 0.2065, 1.0),
])
def test_wilson_interval_matches_hand_computed(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(low, abs=1e-4)
    assert hi == pytest.approx(high, abs=1e-4)


def test_wilson_interval_without_votes_is_everything():
    assert wilson_interval(0, 0) == (0.0, 1.0)


def rows(*specs):
    return [make_row(slug, slug.upper(), dope, nope, 0, None, control)
            for slug, dope, nope, control in specs]


def test_rank_ranges_against_hand_computed_values():
    # a 80/100 -> [.711, .867]; b 75/100 -> [.657, .825]; c 40/100 -> [.309, .498]
    ranked = rank_rows(rows(("c", 40, 60, False), ("a", 80, 20, False), ("b", 75, 25, False),
                            ("random", 95, 5, True)))
    by_slug = {r.slug: r for r in ranked}
    assert (by_slug["a"].rank_low, by_slug["a"].rank_high) == (1, 2)
    assert (by_slug["b"].rank_low, by_slug["b"].rank_high) == (1, 2)
    assert (by_slug["c"].rank_low, by_slug["c"].rank_high) == (3, 3)
    # The control is a reference row: shown in order of its lower bound, never ranked.
    assert by_slug["random"].rank_low is None and by_slug["random"].rank_high is None
    assert [r.slug for r in ranked] == ["random", "a", "b", "c"]


def test_rate_excludes_skips():
    row = make_row("a", "A", 3, 1, 50, 0.9, False)
    assert (row.votes, row.approvals, row.skips, row.rate) == (4, 3, 50, 0.75)


def test_votes_to_separate():
    a, b = rows(("a", 60, 40, False), ("b", 50, 50, False))
    estimate = votes_to_separate(a, b)
    assert estimate["status"] == "estimate"
    m = estimate["per_variant"]
    assert estimate["additional_votes"] == 2 * m
    # At m the intervals (rates held) separate, one vote fewer they do not.
    lo_a = wilson_interval(0.6 * (100 + m), 100 + m)[0]
    hi_b = wilson_interval(0.5 * (100 + m), 100 + m)[1]
    assert lo_a > hi_b
    lo_a = wilson_interval(0.6 * (99 + m), 99 + m)[0]
    hi_b = wilson_interval(0.5 * (99 + m), 99 + m)[1]
    assert lo_a <= hi_b


@pytest.mark.parametrize(("a", "b", "status"), [
    (("a", 95, 5, False), ("b", 10, 90, False), "separated"),
    (("a", 0, 0, False), ("b", 10, 90, False), "no_data"),
    (("a", 50, 50, False), ("b", 50, 50, False), "too_close"),
])
def test_votes_to_separate_not_applicable(a, b, status):
    estimate = votes_to_separate(*rows(a, b))
    assert estimate["status"] == status
    assert estimate["additional_votes"] is None


def test_before_any_vote_the_control_sits_below_the_variants():
    rows = rank_rows([make_row("random", "Random", 0, 0, 0, 0.1, True),
                      make_row("b", "B", 0, 0, 0, 0.8, False),
                      make_row("a", "A", 0, 0, 0, 0.7, False)])
    assert [r.slug for r in rows] == ["a", "b", "random"]
    assert [(r.rank_low, r.rank_high) for r in rows[:2]] == [(1, 2), (1, 2)]
