"""The statistics' pure parts: design, allocation, estimates, confidence sequences."""

import math
import random

import numpy as np
import pytest

from webapp.stats import allocation, confseq, estimates, standings
from webapp.stats.design import CONTROL, REAL, build_design


def toy_design(queries=40, seed=0):
    """Four real variants and a control on `queries` queries; variants 0 and 1 agree on
    half the queries (pooled cells), 2 and 3 never agree with anyone."""
    rng = random.Random(seed)
    variants = [(10, REAL), (11, REAL), (12, REAL), (13, REAL), (14, CONTROL)]
    pairs, pid = [], 0
    for q in range(queries):
        matches = {10: 1000 + q, 11: 1000 + q if q % 2 else 2000 + q, 12: 3000 + q,
                   13: 4000 + q, 14: 5000 + rng.randrange(10 ** 6)}
        for v, m in matches.items():
            pid += 1
            pairs.append((pid, v, q, m))
    return build_design(variants, pairs)


def truth_of(design, theta):
    """Each variant's true approval: the mean of its cells' theta."""
    return [float(np.mean([theta[c] for c in cells.values()])) for cells in design.by_variant]


# ---------------------------------------------------------------- design and pooling

def test_a_shared_image_pair_is_one_cell_credited_to_both():
    design = toy_design()
    assert len(design.cells) == 40 * 5 - 20  # variants 0 and 1 share 20 cells
    shared = design.by_variant[0][1]
    assert design.by_variant[1][1] == shared
    returning = [i for i, cells in enumerate(design.by_variant) if cells.get(1) == shared]
    assert returning == [0, 1]
    w = estimates.variant_weights(design)
    assert w[0, shared] == w[1, shared] == 1 / 40 and w[2, shared] == 0
    # One judgment of it counts, in the tally, for both.
    t = estimates.Tally.empty(len(design.cells))
    t.add(shared, True, 0.5)
    assert float(w[0] @ t.dope_inv) == float(w[1] @ t.dope_inv) > 0
    assert float(w[2] @ t.dope_inv) == 0


def test_comparisons_use_only_the_queries_where_variants_differ():
    design = toy_design()
    assert design.differing(0, 1) == list(range(0, 40, 2))
    d = estimates.difference_weights(design, 0, 1)
    assert np.count_nonzero(d) == 40  # 20 queries, a cell of each variant
    assert d.sum() == pytest.approx(0)
    assert not d[design.by_variant[0][1]]  # a shared cell weighs nothing


# ---------------------------------------------------------------- allocation

def make(design, **kw):
    args = {"control_share": 0.1, "adaptive_share": 0.5, **kw}
    return allocation.make_allocation(design, **args)


def test_probabilities_sum_to_one_and_rules_keep_their_shares():
    design = toy_design()
    alloc = make(design, focus={(0, 2): 0.5, (0, 3): 0.5})
    assert sum(alloc.probability) == pytest.approx(1)
    shares = {r.reason: r.share for r in alloc.rules}
    assert shares == pytest.approx({"control": 0.1, "adaptive": 0.45, "uniform": 0.45})
    rng = random.Random(3)
    reasons = [alloc.draw(rng)[0] for _ in range(20000)]
    for reason, share in shares.items():
        assert abs(reasons.count(reason) / 20000 - share) < 0.015


def test_draws_follow_the_recorded_probabilities():
    design = toy_design(queries=10)
    alloc = make(design, focus={(1, 2): 1.0})
    rng = random.Random(4)
    n = 60000
    counts = np.bincount([alloc.draw(rng)[2] for _ in range(n)], minlength=len(design.cells))
    expected = np.array(alloc.probability) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < len(design.cells) + 5 * math.sqrt(2 * len(design.cells))


def test_the_control_is_never_chosen_by_the_adaptive_rule():
    design = toy_design()
    alloc = make(design, focus={(0, 4): 1.0, (0, 2): 1.0})  # a focus naming the control
    adaptive = next(r for r in alloc.rules if r.reason == "adaptive")
    assert {v for v, _ in adaptive.outcomes} == {0, 2}
    control = next(r for r in alloc.rules if r.reason == "control")
    assert {v for v, _ in control.outcomes} == {4}


def test_the_adaptive_rule_serves_only_queries_where_the_two_differ():
    design = toy_design()
    alloc = make(design, focus={(0, 1): 1.0})
    adaptive = next(r for r in alloc.rules if r.reason == "adaptive")
    queries = {design.cells[c][0] for _, c in adaptive.outcomes}
    assert queries == set(design.differing(0, 1))


def test_draw_fresh_skips_seen_pairs_and_keeps_the_others_in_proportion():
    design = toy_design(queries=4)
    alloc = make(design)
    keep = [c for c in range(len(design.cells)) if alloc.probability[c] > 0][:3]
    seen = {design.cells[c] for c in range(len(design.cells)) if c not in keep}
    rng = random.Random(5)
    counts = {c: 0 for c in keep}
    for _ in range(9000):
        _, _, cell = alloc.draw_fresh(seen, rng)
        counts[cell] += 1
    total = sum(alloc.probability[c] for c in keep)
    for c in keep:
        assert abs(counts[c] / 9000 - alloc.probability[c] / total) < 0.02
    assert alloc.draw_fresh(set(design.cells), rng) is None


def test_a_rule_with_nothing_to_draw_gives_its_share_away():
    design = toy_design()
    alloc = make(design, control_share=0.0)
    assert {r.reason for r in alloc.rules} == {"adaptive", "uniform"}
    assert sum(r.share for r in alloc.rules) == pytest.approx(1)


# ---------------------------------------------------------------- estimates

def simulate(design, theta, alloc_for, n, seed):
    """Judgments drawn by a changing allocation; returns the tally."""
    rng = random.Random(seed)
    t = estimates.Tally.empty(len(design.cells))
    alloc = alloc_for(0)
    for k in range(n):
        if k % 500 == 0:
            alloc = alloc_for(k)
        _, _, cell = alloc.draw(rng)
        t.add(cell, rng.random() < theta[cell], alloc.probability[cell])
    return t


def test_weighted_estimates_are_unbiased_under_a_changing_allocation():
    """The allocation swings between focuses every 500 draws: the inverse probability
    weighted estimates still centre on the truth, within their standard error."""
    design = toy_design()
    rng = np.random.default_rng(0)
    theta = rng.uniform(0.1, 0.9, len(design.cells))
    truth = truth_of(design, theta)
    focuses = [{(0, 2): 1.0}, {(1, 3): 1.0}, None]

    def alloc_for(k):
        return make(design, adaptive_share=0.8, focus=focuses[(k // 500) % 3])

    t = simulate(design, theta, alloc_for, 30000, seed=1)
    w = estimates.variant_weights(design)
    for i in design.real():
        mean, sd = estimates.mean_and_sd(w[i], t)
        assert abs(mean - truth[i]) < 4 * sd / math.sqrt(t.n), i
        # Far from the plain dope rate of the votes it was credited, which is biased
        # towards the cells the allocation liked.
    d = estimates.difference_weights(design, 0, 2)
    mean, sd = estimates.mean_and_sd(d, t)
    assert abs(mean - (truth[0] - truth[2])) < 4 * sd / math.sqrt(t.n)


def test_the_baseline_only_changes_the_variance():
    design = toy_design()
    theta = np.full(len(design.cells), 0.8)
    t = simulate(design, theta, lambda k: make(design), 5000, seed=2)
    w = estimates.variant_weights(design)[0]
    m0, sd0 = estimates.mean_and_sd(w, t, baseline=0.0)
    m5, sd5 = estimates.mean_and_sd(w, t, baseline=0.8)
    assert abs(m0 - 0.8) < 0.05 and abs(m5 - 0.8) < 0.05
    assert sd5 < 0.6 * sd0


def test_standing_settles_on_a_clear_best_and_says_who_is_tied():
    design = toy_design()
    theta = np.zeros(len(design.cells))
    for i, level in enumerate([0.7, 0.695, 0.4, 0.3, 0.05]):
        for c in design.by_variant[i].values():
            theta[c] = level
    for c in design.by_variant[0].values():
        theta[c] = 0.7  # shared cells: variant 0's level
    st = None
    t = simulate(design, theta, lambda k: make(design, focus=st.focus() if st else None),
                 0, seed=3)
    rng = random.Random(3)
    alloc = make(design)
    for k in range(1, 200001):
        _, _, cell = alloc.draw(rng)
        t.add(cell, rng.random() < theta[cell], alloc.probability[cell])
        if k % 1000 == 0:
            st = standings.standing(design, t, seed=k)
            if st.settled:
                break
            alloc = make(design, focus=st.focus())
    assert st.settled
    assert st.leader in (0, 1) and set(st.tied_with) <= {0, 1}
    assert 2 not in st.open_comparisons() and 3 not in st.open_comparisons()
    ranks = dict(zip(st.positions, st.ranks, strict=True))
    assert ranks[3][0] >= 3  # clearly below the top two


def test_nothing_is_settled_before_the_minimum_of_judgments():
    design = toy_design()
    t = estimates.Tally.empty(len(design.cells))
    for c in design.by_variant[0].values():
        t.add(c, True, 0.5)
    st = standings.standing(design, t)
    assert not st.settled and t.n < standings.MIN_JUDGMENTS


def test_rank_ranges_against_hand_computed_values():
    ranks = standings.rank_ranges([0.6, 0.5, 0.1], [0.9, 0.8, 0.4])
    assert ranks == [(1, 2), (1, 2), (3, 3)]


def test_p_best_sums_to_one_and_favours_the_better():
    design = toy_design()
    theta = np.array([0.9 if c in design.by_variant[2].values() else 0.3
                      for c in range(len(design.cells))])
    t = simulate(design, theta, lambda k: make(design), 4000, seed=6)
    st = standings.standing(design, t)
    assert sum(st.p_best) == pytest.approx(1)
    assert st.p_best[st.positions.index(2)] > 0.99 and st.leader == 2


# ---------------------------------------------------------------- confidence sequences

def test_the_radius_against_its_formula():
    alpha, t_star = 0.05, 5000
    rho2 = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / t_star
    for t in (1, 10, 5000, 10 ** 6):
        expected = math.sqrt(2 * (t * rho2 + 1) / (t * t * rho2)
                             * math.log(math.sqrt(t * rho2 + 1) / alpha))
        assert confseq.radius(t, alpha, t_star) == pytest.approx(expected, rel=1e-12)
    # By hand: rho^2 = (5.9915 + ln 6.9915) / 5000 = 0.0015872; t rho^2 + 1 = 8.9362;
    # 2 * 8.9362 / (5000^2 * 0.0015872) = 4.5040e-4; ln(sqrt(8.9362) / 0.05) = 4.0907;
    # sqrt(4.5040e-4 * 4.0907) = 0.04292 per unit sd, 1.55 times the fixed-sample 0.02772.
    assert confseq.radius(5000, 0.05, 5000) == pytest.approx(0.04292, abs=2e-5)
    assert confseq.radius(0, 0.05) == math.inf


def test_the_sequence_is_wider_than_a_fixed_sample_interval_and_shrinks():
    fixed = 1.959963984540054 / math.sqrt(5000)
    assert confseq.radius(5000, 0.05, 5000) > fixed
    assert confseq.radius(10 ** 6, 0.05) < confseq.radius(10 ** 4, 0.05)


def test_the_sequence_covers_at_every_look():
    """Look after every observation for 3,000 steps: the mean leaves the sequence in at
    most about alpha of 400 seeded runs (a fixed-sample interval watched this way
    fails far more often)."""
    rng = np.random.default_rng(7)
    alpha, runs, steps, p = 0.05, 400, 3000, 0.3
    x = (rng.random((runs, steps)) < p).astype(float)
    t = np.arange(1, steps + 1)
    mean = np.cumsum(x, axis=1) / t
    sd = np.sqrt(np.maximum(np.cumsum(x * x, axis=1) / t - mean ** 2, 1e-12))
    radius = np.array([confseq.radius(k, alpha, 500) for k in t])
    start = 30  # the sequence is asymptotic: the first few looks are not counted
    miss_cs = (np.abs(mean - p) > sd * radius)[:, start:].any(axis=1).mean()
    miss_fixed = (np.abs(mean - p) > sd * 1.96 / np.sqrt(t))[:, start:].any(axis=1).mean()
    assert miss_cs <= alpha + 0.03
    assert miss_fixed > 3 * alpha


# ---------------------------------------------------------------- epochs

def test_a_ledger_with_unit_weights_is_the_plain_tally():
    design = toy_design()
    theta = np.random.default_rng(1).uniform(0.2, 0.8, len(design.cells))
    rng = random.Random(8)
    alloc = make(design)
    ledger = estimates.Ledger(estimates.Weights(design))
    plain = estimates.Tally.empty(len(design.cells))
    for k in range(3000):
        if k % 700 == 0:
            ledger.start_epoch({})  # every weight 1
        _, _, cell = alloc.draw(rng)
        dope = rng.random() < theta[cell]
        ledger.add(cell, dope, alloc.probability[cell])
        plain.add(cell, dope, alloc.probability[cell])
    a = standings.standing(design, ledger, seed=1)
    b = standings.standing(design, plain, seed=1)
    assert a.estimate == pytest.approx(b.estimate) and a.low == pytest.approx(b.low)
    assert a.margins.keys() == b.margins.keys()
    for j in a.margins:
        assert a.margins[j] == pytest.approx(b.margins[j])


def test_epoch_weights_keep_the_estimate_unbiased_and_narrow_it():
    """The allocation focuses on (0, 2) after a uniform start; weighting the focused
    epochs by their mass keeps the difference centred on the truth, with a narrower
    interval than every judgment alike."""
    design = toy_design()
    theta = np.random.default_rng(2).uniform(0.2, 0.8, len(design.cells))
    truth = truth_of(design, theta)
    weights = estimates.Weights(design)
    uniform = make(design, adaptive_share=0.0)
    widths, misses = {"plain": [], "epochs": []}, 0
    for seed in range(12):
        rng = random.Random(seed)
        ledger = estimates.Ledger(weights)
        alloc = uniform
        ledger.start_epoch(estimates.epoch_weights(weights, alloc.probability,
                                                   uniform.probability))
        for k in range(12000):
            if k == 3000:
                alloc = make(design, adaptive_share=0.9, focus={(0, 2): 1.0})
                ledger.start_epoch(estimates.epoch_weights(weights, alloc.probability,
                                                           uniform.probability))
            _, _, cell = alloc.draw(rng)
            ledger.add(cell, rng.random() < theta[cell], alloc.probability[cell])
        for name, source in (("plain", ledger.total), ("epochs", ledger)):
            mean, low, high = standings.vector_interval(source, weights, ("d", 0, 2), 0.05)
            widths[name].append(high - low)
            if name == "epochs":
                misses += not low <= truth[0] - truth[2] <= high
    assert misses <= 2
    # Narrower in every run (here by a few per cent: four variants, so the focus
    # raises the pair's probability less than on the default build's seven).
    assert all(e < p for e, p in zip(widths["epochs"], widths["plain"], strict=True))


def test_the_weighted_radius_with_unit_weights_is_the_plain_one():
    for t in (10, 1000, 50000):
        sd = 0.7
        assert confseq.weighted_radius(sd * sd * t, t, t, 0.05) == \
            pytest.approx(sd * confseq.radius(t, 0.05), rel=1e-12)


def test_warm_up_gold_never_draws_a_pair_a_real_variant_returns():
    # query 1: the control's match is also variant 1's, so it is not negative gold
    design = build_design([(1, REAL), (2, REAL), (9, CONTROL)],
                          [(1, 1, 1, 10), (2, 2, 1, 11), (3, 9, 1, 10),
                           (4, 1, 2, 12), (5, 2, 2, 13), (6, 9, 2, 14),
                           (7, 1, 3, 15), (8, 2, 3, 16), (9, 9, 3, 17)])
    gold = allocation.gold_allocation(design)
    drawn = {design.cells[gold.draw(random.Random(s))[2]] for s in range(200)}
    assert drawn == {(2, 14), (3, 17)}
    assert gold.probability[design.cell_index[(2, 14)]] == pytest.approx(0.5)
    assert gold.probability[design.cell_index[(1, 10)]] == 0
