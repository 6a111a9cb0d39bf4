"""The voter model on data where the answer is known, and against a reference fit."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from webapp.stats import quality, voters


def crowd(seed=0, n_cells=300, kinds=("honest",) * 20 + ("yes",) * 4 + ("coin",) * 4,
          votes_each=150, gold_share=0.15, sens=None, spec=None):
    """Voters judging cells with a known truth; a share of cells are negative gold."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n_cells) < 0.5).astype(int)
    gold = np.full(n_cells, -1)
    gold_cells = rng.random(n_cells) < gold_share
    truth[gold_cells] = 0
    gold[gold_cells] = 0
    sens = sens or {"honest": 0.85, "yes": 0.95, "coin": 0.5}
    spec = spec or {"honest": 0.8, "yes": 0.1, "coin": 0.5}
    voter, cell, y = [], [], []
    for v, kind in enumerate(kinds):
        for c in rng.choice(n_cells, size=votes_each, replace=False):
            p = sens[kind] if truth[c] else 1 - spec[kind]
            voter.append(v)
            cell.append(c)
            y.append(int(rng.random() < p))
    return np.array(voter), np.array(cell), np.array(y), gold, truth, kinds


def test_dawid_skene_recovers_known_voters_and_truth():
    voter, cell, y, gold, truth, kinds = crowd()
    fit = voters.dawid_skene(voter, cell, y.astype(float), gold, len(kinds))
    honest = [v for v, k in enumerate(kinds) if k == "honest"]
    yes = [v for v, k in enumerate(kinds) if k == "yes"]
    coins = [v for v, k in enumerate(kinds) if k == "coin"]
    assert abs(fit.sensitivity[honest].mean() - 0.85) < 0.05
    assert abs(fit.specificity[honest].mean() - 0.8) < 0.05
    assert fit.specificity[yes].mean() < 0.25 and fit.sensitivity[yes].mean() > 0.85
    reliability = fit.sensitivity + fit.specificity - 1
    assert abs(reliability[coins]).max() < 0.2 and reliability[honest].min() > 0.4
    judged = np.bincount(cell, minlength=len(gold)) > 0
    accuracy = ((fit.good > 0.5) == truth)[judged & (gold < 0)].mean()
    assert accuracy > 0.9


def test_dawid_skene_reaches_the_same_optimum_as_a_direct_maximisation():
    """Reference: the same log posterior maximised by L-BFGS over logit parameters."""
    voter, cell, y, gold, _, kinds = crowd(seed=1, n_cells=80, kinds=("honest",) * 5
                                           + ("yes", "coin"), votes_each=50)
    k = len(kinds)
    fit = voters.dawid_skene(voter, cell, y.astype(float), gold, k)

    def objective(x):
        s, t, p = expit(x[:k]), expit(x[k:2 * k]), float(expit(x[-1]))
        return -voters.log_posterior(voter, cell, y, gold, s, t, p)

    start = np.zeros(2 * k + 1)
    ref = minimize(objective, start, method="L-BFGS-B", options={"maxiter": 5000})
    s_ref, t_ref = expit(ref.x[:k]), expit(ref.x[k:2 * k])
    assert -ref.fun == pytest.approx(fit.log_posterior, abs=1e-3)
    np.testing.assert_allclose(fit.sensitivity, s_ref, atol=5e-3)
    np.testing.assert_allclose(fit.specificity, t_ref, atol=5e-3)
    assert fit.prevalence == pytest.approx(float(expit(ref.x[-1])), abs=5e-3)


def test_voters_below_the_crowds_gold_floor_are_excluded_and_honest_ones_kept():
    kinds = ("honest",) * 40 + ("yes",) * 6 + ("coin",) * 6
    voter, cell, y, gold, _, kinds = crowd(seed=2, kinds=kinds, n_cells=900, votes_each=600)
    records = voters.gold_records(voter, y, gold[cell] == 0, len(kinds))
    floor = quality.GoldFloor.of(records)
    assert floor.calibrated_on == len(kinds) and floor.floor > quality.FLOOR_MIN
    excluded = {v for v, r in enumerate(records) if floor.below(r)}
    assert excluded <= {v for v, k in enumerate(kinds) if k != "honest"}  # no honest voter
    assert len(excluded) >= 7  # of 12 yes-sayers and coins (8 here: z > 2.58 asks a lot)


def test_a_strict_honest_voter_is_not_excluded_a_yes_sayer_is():
    """Honest voters range from lenient to strict; the strictest says dope on a third of
    good pairs and on 5% of bad ones (J about 0.15, below the old fixed 0.2 line)."""
    kinds = ("honest",) * 30 + ("strict",) * 3 + ("yes",) * 3
    voter, cell, y, gold, _, kinds = crowd(
        seed=4, kinds=kinds, n_cells=600, votes_each=400,
        sens={"honest": 0.8, "strict": 0.33, "yes": 0.95},
        spec={"honest": 0.8, "strict": 0.95, "yes": 0.1})
    records = voters.gold_records(voter, y, gold[cell] == 0, len(kinds))
    floor = quality.GoldFloor.of(records)
    excluded = {kinds[v] for v, r in enumerate(records) if floor.below(r)}
    assert excluded == {"yes"}


def test_weak_evidence_down_weights_instead_of_dropping():
    floor = quality.GoldFloor(floor=0.2, median=0.4, spread=0.05, calibrated_on=100)
    yes_ish = voters.GoldRecord(gold_votes=8, gold_dopes=8, other_votes=40, other_dopes=36)
    assert not floor.below(yes_ish) and 0 < floor.weight(yes_ish) < 0.5
    honest = voters.GoldRecord(gold_votes=6, gold_dopes=0, other_votes=30, other_dopes=15)
    assert floor.weight(honest) == 1.0


def test_few_gold_votes_are_not_enough_to_exclude():
    floor = quality.GoldFloor(floor=0.2, median=0.4, spread=0.05, calibrated_on=100)
    record = voters.GoldRecord(gold_votes=2, gold_dopes=2, other_votes=8, other_dopes=2)
    assert not floor.below(record)  # the ten votes: 2 of 2 on gold, 2 of 8 real
    record = voters.GoldRecord(gold_votes=40, gold_dopes=37, other_votes=260, other_dopes=240)
    assert floor.below(record)
    mean, sd = record.contrast()
    assert abs(mean) < 0.05 and sd < 0.06


def test_positive_gold_pins_sensitivity():
    """Cells known good (the same product) are fixed at z = 1: a voter who says nope to
    all of them gets a low sensitivity however the rest is labelled."""
    voter, cell, y, gold, truth, kinds = crowd(seed=3, votes_each=200)
    rng = np.random.default_rng(3)
    positive = (gold < 0) & (rng.random(len(gold)) < 0.2)
    gold = np.where(positive, 1, gold)
    contrarian = len(kinds)
    extra = np.flatnonzero(positive)[:40]
    voter = np.concatenate([voter, np.full(len(extra), contrarian)])
    cell = np.concatenate([cell, extra])
    y = np.concatenate([y, np.zeros(len(extra), dtype=int)])
    fit = voters.dawid_skene(voter, cell, y.astype(float), gold, len(kinds) + 1)
    assert fit.sensitivity[contrarian] < 0.1
    assert (fit.good[positive] == 1).all()


def _groups_voting(follower, seed=5):
    """Cells of four variants; 40 honest groups (each its own leniency and a taste that
    likes or dislikes each variant a little) and one last group `follower(variant)`."""
    rng = np.random.default_rng(seed)
    n_cells, groups = 400, 41
    variant = rng.integers(0, 4, n_cells)
    logit = rng.normal(0, 1, n_cells)
    member = np.eye(4, dtype=bool)[variant]
    g, c, y = [], [], []
    for k in range(groups):
        shift, taste = rng.normal(0, 1.0), rng.normal(0, 0.3, 4)
        for cell in rng.choice(n_cells, size=150, replace=False):
            if k == groups - 1:
                p = follower(variant[cell], logit[cell])
            else:
                p = 1 / (1 + np.exp(-(logit[cell] + shift + taste[variant[cell]])))
            g.append(k)
            c.append(cell)
            y.append(int(rng.random() < p))
    g, c, y = np.array(g), np.array(c), np.array(y, dtype=float)
    return g, c, y, member[c], groups


def test_targeting_flags_a_group_that_follows_one_variant_not_a_lenient_one():
    g, c, y, member, groups = _groups_voting(lambda v, logit: float(v == 2))
    z, column = quality.follows(*voters.targeting_effects(g, c, y, member, groups))
    assert z[-1] > quality.Z_TARGETING and column[-1] == 2
    assert (z[:-1] < quality.Z_TARGETING).all()  # honest, tastes of their own included
    few = quality.follows(*voters.targeting_effects(g[:10], c[:10], y[:10], member[:10],
                                                    groups))[0]
    assert (few == 0).all()  # below MIN_TARGETING_VOTES nothing is judged


def test_disliking_one_variant_is_not_following_it():
    """One-sided: a group that says nope to every match of variant 1 (and judges the
    rest honestly) approves no variant more than everyone else: not a follower."""
    g, c, y, member, groups = _groups_voting(
        lambda v, logit: 0.0 if v == 1 else 1 / (1 + np.exp(-logit)))
    z, _ = quality.follows(*voters.targeting_effects(g, c, y, member, groups))
    assert z[-1] < quality.Z_TARGETING
