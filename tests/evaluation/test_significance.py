"""Paired t-test over users: a hand-computed example, SciPy as an oracle, and the user pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mmgraph.evaluation.significance import betainc, paired_ttest, paired_users


def test_hand_computed_example():
    a = np.array([0.5, 0.2, 0.9, 0.4])
    b = np.array([0.3, 0.2, 0.5, 0.1])
    # d = [0.2, 0, 0.4, 0.3]: mean 0.225, s_d^2 = 0.0875 / 3, t = 0.225 / (s_d / 2)
    t, p = paired_ttest(a, b)
    assert t == pytest.approx(0.225 / (math.sqrt(0.0875 / 3) / 2), rel=1e-12)
    assert t == pytest.approx(2.634930, abs=1e-6)
    # two-sided p of Student's t with 3 df at t = 2.63493 (tables: t_{0.05,3} = 3.182, t_{0.10,3} = 2.353)
    assert 0.05 < p < 0.10
    assert p == pytest.approx(0.0779943, abs=1e-7)  # SciPy ttest_rel on these four pairs
    t2, p2 = paired_ttest(b, a)
    assert t2 == pytest.approx(-t) and p2 == pytest.approx(p)


def test_betainc_known_values():
    assert betainc(1.0, 1.0, 0.3) == pytest.approx(0.3)  # uniform
    assert betainc(2.0, 3.0, 0.4) == pytest.approx(0.5248, abs=1e-12)  # 1 - sum_{j<2} C(4,j) .4^j .6^(4-j)
    assert betainc(0.5, 0.5, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [5, 40, 3000])
def test_matches_scipy(seed, n):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    a = rng.random(n)
    b = a + rng.normal(0.01 * seed, 0.2, n)
    t, p = paired_ttest(a, b)
    ref = stats.ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic, rel=1e-10)
    assert p == pytest.approx(ref.pvalue, rel=1e-7, abs=1e-300)


def test_degenerate_inputs():
    x = np.array([0.1, 0.2, 0.3])
    assert paired_ttest(x, x) == (0.0, 1.0)
    assert paired_ttest(x + 1, x) == (math.inf, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        paired_ttest(x[:1], x[:1])
    with pytest.raises(ValueError, match="one length"):
        paired_ttest(x, x[:2])


def test_pairing_aligns_users_and_drops_nan():
    va, vb = paired_users(np.array([1, 3, 5, 7]), np.array([0.1, np.nan, 0.5, 0.7]),
                          np.array([0, 3, 5, 7]), np.array([9.0, 3.0, 5.0, np.nan]))
    assert va.tolist() == [0.5] and vb.tolist() == [5.0]
