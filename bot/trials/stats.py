"""The few distributions the guardrails and `/trial`'s intervals need, in plain Python.

    hypergeom_tail(x, total=1000, marked=19, drawn=100)   # P(X >= x), X ~ Hypergeometric
    normal_tail(2.33)                                      # P(Z >= 2.33) ~ 0.0099
    quantile_interval(sorted_values, 0.95)                 # (x_(j), x_(k)) or None at an end
    mean_interval(n, total, squares)                       # (low, high), Student's t

No SciPy at run time: the bot needs these a few times a minute over at most a few thousand
values, and the exact sums below are short enough for that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

Z95 = 1.959963984540054


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def hypergeom_tail(x: int, *, total: int, marked: int, drawn: int) -> float:
    """P(X >= x) for X the marked items among `drawn` taken without replacement from `total`
    of which `marked` are marked: the exact one-sided p-value of a 2x2 table (Fisher)."""
    low, high = max(0, drawn - (total - marked)), min(marked, drawn)
    if x <= low:
        return 1.0
    if x > high:
        return 0.0
    denominator = _log_choose(total, drawn)
    tail = math.fsum(
        math.exp(_log_choose(marked, k) + _log_choose(total - marked, drawn - k) - denominator)
        for k in range(x, high + 1)
    )
    return min(1.0, tail)


def normal_tail(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2))


def normal_quantile(p: float) -> float:
    """z with P(Z <= z) = p (bisection on erfc: exact enough for the levels used here)."""
    low, high = -40.0, 40.0
    for _ in range(200):
        middle = (low + high) / 2
        if 1 - normal_tail(middle) < p:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def binomial_cdf(n: int, p: float) -> list[float]:
    """[P(B <= i) for i in 0..n], B ~ Binomial(n, p), 0 < p < 1 (pmf by recursion, in logs)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    log_pmf = n * log_q
    cdf: list[float] = []
    running = 0.0
    for i in range(n + 1):
        if i:
            log_pmf += math.log(n - i + 1) - math.log(i) + log_p - log_q
        running += math.exp(log_pmf)
        cdf.append(min(1.0, running))
    return cdf


def quantile_interval(
    ordered: Sequence[float], q: float, level: float = 0.95
) -> tuple[float | None, float | None]:
    """The distribution-free interval of the q-quantile: order statistics x_(j) <= x_(k) with
    P(x_(j) <= quantile <= x_(k)) >= level for any continuous distribution (the count of values
    below the quantile is Binomial(n, q)). An end the sample is too small to bound is None."""
    n = len(ordered)
    if n == 0:
        return None, None
    tail = (1 - level) / 2
    cdf = binomial_cdf(n, q)
    # Lower: the largest j with P(B < j) <= tail; upper: the smallest k with P(B < k) >= 1-tail.
    below = [i for i, value in enumerate(cdf) if value <= tail]
    j = below[-1] + 1 if below else 0
    k = next((i + 1 for i, value in enumerate(cdf) if value >= 1 - tail), n + 1)
    return (ordered[j - 1] if j >= 1 else None, ordered[k - 1] if k <= n else None)


def t_critical(df: int, z: float = Z95) -> float:
    """Student's t quantile matching the normal's `z` (Cornish-Fisher in 1/df: within 0.5 %
    of the table from df = 5 on, a little wide below)."""
    if df <= 0:
        return math.inf
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def mean_and_variance(n: int, total: float, squares: float) -> tuple[float, float]:
    """The mean and the sample variance (n - 1) from a count, a sum and a sum of squares."""
    mean = total / n
    variance = max(0.0, (squares - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, variance


def mean_interval(n: int, total: float, squares: float) -> tuple[float, float] | None:
    """The 95 % interval of a mean (Student's t), None below two values."""
    if n < 2:
        return None
    mean, variance = mean_and_variance(n, total, squares)
    half = t_critical(n - 1) * math.sqrt(variance / n)
    return mean - half, mean + half
