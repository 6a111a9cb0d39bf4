"""webapp.stats.looking: who looks at the pictures, from the gold votes."""

import numpy as np
import pytest
from scipy.special import betaln

from webapp.stats import looking


def crowd(seed, shares, voters=20000, gold_share=0.1):
    """Simulated counts: honest voters (gold dope rate ~ Beta(1, 9), real ~ Beta(5, 5)),
    yes-sayers (0.9 everywhere) and coins (0.5), heavy-tailed activity."""
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, voters, p=shares)
    votes = np.clip((2 * (1 - rng.random(voters)) ** (-1 / 1.2)).astype(int), 2, 500)
    n = rng.binomial(votes, gold_share)
    g = np.where(kind == 0, rng.beta(1, 9, voters), np.where(kind == 1, 0.9, 0.5))
    r = np.where(kind == 0, rng.beta(5, 5, voters), np.where(kind == 1, 0.9, 0.5))
    return kind, votes, (n, rng.binomial(n, g), votes - n, rng.binomial(votes - n, r))


def test_the_beta_binomial_is_scipys():
    k, n = np.array([0.0, 1, 2, 7]), np.array([3.0, 3, 5, 40])
    np.testing.assert_allclose(looking._beta_binomial_log(k, n, 2.0, 5.0),
                               betaln(2 + k, 5 + n - k) - betaln(2, 5))


@pytest.mark.parametrize("seed", [0, 1])
def test_an_honest_crowd_keeps_its_weight(seed):
    kind, votes, counts = crowd(seed, [1.0, 0, 0])
    fit = looking.fit_looking(*counts)
    assert fit.pi < 0.03 and abs(fit.mu - 0.1) < 0.03
    assert (fit.weight * votes).sum() / votes.sum() > 0.98
    assert (fit.weight < 0.5).mean() < 0.005


def test_yes_sayers_and_coins_lose_most_of_their_say():
    kind, votes, counts = crowd(2, [0.7, 0.2, 0.1], gold_share=0.2)
    fit = looking.fit_looking(*counts)
    kept = [(fit.weight * votes)[kind == t].sum() / votes[kind == t].sum() for t in range(3)]
    assert kept[0] > 0.6 and kept[1] < 0.2 and kept[2] < 0.35
    assert kept[0] > 2.5 * max(kept[1], kept[2])


def test_voters_without_gold_votes_all_weigh_one_minus_pi():
    fit = looking.fit_looking([0, 0, 3, 2] * 20, [0, 0, 3, 0] * 20, [5, 1, 4, 8] * 20,
                              [5, 0, 4, 2] * 20)
    none = fit.weight[::4], fit.weight[1::4]
    assert np.allclose(none, 1 - fit.pi) and fit.pi == looking.PI_MAX
    assert fit.weight[2] < 0.1 < 0.5 < fit.weight[3]  # 3 of 3 dope on gold; 0 of 2


def test_few_heavy_voters_leave_the_crowds_gold_rate_at_its_default():
    fit = looking.fit_looking([1] * 50, [1] * 10 + [0] * 40, [3] * 50, [3] * 50)
    assert (fit.mu, fit.rho) == (looking.MU_DEFAULT, looking.RHO_DEFAULT)
    assert fit.weight[0] < 0.5 < fit.weight[-1]


def test_no_voters():
    fit = looking.fit_looking([], [], [], [])
    assert len(fit.weight) == 0 and fit.summary()["below_half"] == 0
