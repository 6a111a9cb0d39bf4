"""The voter model on data where the answer is known, and against a reference fit."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

from webapp.stats import voters


def crowd(seed=0, n_cells=300, kinds=("honest",) * 20 + ("yes",) * 4 + ("coin",) * 4,
          votes_each=150, gold_share=0.15):
    """Voters judging cells with a known truth; a share of cells are negative gold."""
    rng = np.random.default_rng(seed)
    truth = (rng.random(n_cells) < 0.5).astype(int)
    gold = np.full(n_cells, -1)
    gold_cells = rng.random(n_cells) < gold_share
    truth[gold_cells] = 0
    gold[gold_cells] = 0
    sens = {"honest": 0.85, "yes": 0.95, "coin": 0.5}
    spec = {"honest": 0.8, "yes": 0.1, "coin": 0.5}
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


def test_voters_at_chance_on_gold_are_excluded_and_honest_ones_kept():
    voter, cell, y, gold, _, kinds = crowd(seed=2, votes_each=300)
    records = voters.gold_records(voter, y, gold[cell] == 0, len(kinds))
    excluded = {v for v, r in enumerate(records) if r.at_chance()}
    at_chance = {v for v, k in enumerate(kinds) if k != "honest"}
    assert excluded <= at_chance  # no honest voter
    assert len(excluded) >= 7  # of 8: one coin came out at J = 0.11 +- 0.08, not yet shown


def test_few_gold_votes_are_not_enough_to_exclude():
    record = voters.GoldRecord(gold_votes=2, gold_dopes=2, other_votes=8, other_dopes=8)
    assert not record.at_chance()  # a yes-sayer, maybe; not yet shown
    record = voters.GoldRecord(gold_votes=40, gold_dopes=37, other_votes=260, other_dopes=240)
    assert record.at_chance()
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


def test_targeting_flags_a_voter_who_follows_one_variant_not_a_lenient_one():
    """Cells belong to one of four variants; honest voters (some lenient, some strict)
    follow the cells' approval; one group says dope exactly on variant 2's cells."""
    rng = np.random.default_rng(5)
    n_cells, groups = 400, 41
    variant = rng.integers(0, 4, n_cells)
    theta = rng.uniform(0.2, 0.8, n_cells)
    member = np.eye(4, dtype=bool)[variant]
    g, c, y = [], [], []
    for k in range(groups):
        shift = rng.normal(0, 1.0)  # leniency on the logit scale
        for cell in rng.choice(n_cells, size=120, replace=False):
            if k == groups - 1:
                vote = int(variant[cell] == 2)
            else:
                p = 1 / (1 + np.exp(-(np.log(theta[cell] / (1 - theta[cell])) + shift)))
                vote = int(rng.random() < p)
            g.append(k)
            c.append(cell)
            y.append(vote)
    g, c, y = np.array(g), np.array(c), np.array(y, dtype=float)
    z, column = voters.targeting(g, c, y, member[c], groups)
    assert z[-1] > voters.Z_TARGETING and column[-1] == 2
    assert (z[:-1] < voters.Z_TARGETING).all()
    few = voters.targeting(g[:10], c[:10], y[:10], member[c[:10]], groups)[0]
    assert (few == 0).all()  # below MIN_TARGETING_VOTES nothing is judged
