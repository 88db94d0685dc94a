r"""Paired significance tests over users, for comparing two models evaluated on the same split.

Each model contributes one value per user (a per-user metric from ``per_user.npz``, averaged over
the model's seeds); the test pairs the two values of every user. With ``d_u = a_u - b_u`` over
``n`` users, the **paired t-test** statistic is

.. math::
    t = \frac{\bar d}{s_d / \sqrt{n}}, \qquad s_d^2 = \frac{1}{n - 1} \sum_u (d_u - \bar d)^2,

and the two-sided p-value is :math:`P(|T_{n-1}| \ge |t|) = I_{(n-1)/(n-1+t^2)}\big(\tfrac{n-1}{2},
\tfrac12\big)` (Student's t with ``n - 1`` degrees of freedom, through the regularised incomplete
beta function). This is the test Elliot and RecBole report for per-user ranking metrics; with the
thousands of users of a recommendation split it is robust to the metrics' non-normality.
"""

from __future__ import annotations

import math

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function :math:`I_x(a, b)` for ``a, b > 0``, ``0 <= x <= 1``."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    ln_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(ln_front) * _betacf(b, a, 1.0 - x) / b


def paired_ttest(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sided paired t-test of ``a`` against ``b`` (same users, same order).

    Returns:
        ``(t, p_value)``; ``t > 0`` when ``a`` is higher on average. Identical inputs give
        ``(0.0, 1.0)``; a constant non-zero difference gives ``(±inf, 0.0)``.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired samples must be two 1-d arrays of one length, got {a.shape} and {b.shape}")
    n = a.size
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    d = a - b
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / (sd / math.sqrt(n))
    df = n - 1
    return t, betainc(df / 2.0, 0.5, df / (df + t * t))


def paired_users(users_a: np.ndarray, values_a: np.ndarray, users_b: np.ndarray,
                 values_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values of the users both runs evaluated (NaN entries, e.g. cold metrics of users
    without a held-out positive, dropped), aligned by user id."""
    common, ia, ib = np.intersect1d(users_a, users_b, assume_unique=True, return_indices=True)
    va, vb = np.asarray(values_a)[ia], np.asarray(values_b)[ib]
    keep = ~(np.isnan(va) | np.isnan(vb))
    return va[keep], vb[keep]
