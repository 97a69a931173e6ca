"""Statistics over seeds: sample mean and standard deviation, Student-t intervals, Welch's t-test,
and binomial (Wilson) intervals for counts such as divergences.

Pure Python on floats (the design card's packages have no SciPy): the Student-t distribution
function is written through the regularised incomplete beta function,
``P(|T_df| > t) = I_{df / (df + t^2)}(df / 2, 1 / 2)``, evaluated by its continued fraction
(Lentz's method, Numerical Recipes 3rd ed. section 6.4); quantiles by bisection on it.
"""
import math
from typing import NamedTuple, Optional, Sequence

ALPHA = 0.05   # the level at which a difference is called one
_EPS, _TINY = 1e-15, 1e-300


def _beta_fraction(a, b, x):
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    value = d
    for m in range(1, 400):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            value *= d * c
        if abs(d * c - 1.0) < _EPS:
            break
    return value


def betainc(a, b, x):
    """Regularised incomplete beta function ``I_x(a, b)`` for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                 + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t, df):
    """``P(|T| >= |t|)`` for Student's t with ``df`` (> 0, not necessarily integer) degrees."""
    if not math.isfinite(t):
        return 0.0
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(probability, df):
    """The ``probability`` quantile (0.5 < probability < 1) of Student's t with ``df`` degrees,
    by bisection on `t_two_sided_p`."""
    target = 2.0 * (1.0 - probability)              # the two-sided tail beyond the quantile
    low, high = 0.0, 1.0
    while t_two_sided_p(high, df) > target:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_two_sided_p(middle, df) > target:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


class Summary(NamedTuple):
    """mean, sample standard deviation (ddof 1; 0 for one value), count and the half-width of the
    95 % Student-t interval of the mean (None for fewer than two values)."""

    mean: float
    std: float
    count: int
    half_width: Optional[float]


def finite(values):
    return [float(value) for value in values if value is not None and math.isfinite(value)]


def summarize(values: Sequence[float], level=0.95):
    """`Summary` of the finite values (None, NaN and the infinities left out)."""
    values = finite(values)
    count = len(values)
    if count == 0:
        return Summary(float("nan"), 0.0, 0, None)
    mean = sum(values) / count
    if count == 1:
        return Summary(mean, 0.0, 1, None)
    std = math.sqrt(sum((value - mean) ** 2 for value in values) / (count - 1))
    return Summary(mean, std, count, t_quantile(0.5 + level / 2, count - 1) * std / math.sqrt(count))


class Welch(NamedTuple):
    """Welch's unequal-variance t-test of two samples' means: statistic, degrees of freedom
    (Welch-Satterthwaite) and the two-sided p-value."""

    t: float
    df: float
    p: float


def welch(first: Sequence[float], second: Sequence[float]):
    """Welch's t-test; None when either sample has fewer than two finite values. Two samples
    without any spread and with different means differ (p = 0); with equal means p = 1."""
    first, second = finite(first), finite(second)
    if len(first) < 2 or len(second) < 2:
        return None
    a, b = summarize(first), summarize(second)
    var_a, var_b = a.std ** 2 / a.count, b.std ** 2 / b.count
    if var_a + var_b == 0.0:
        return Welch(math.inf, math.inf, 0.0 if a.mean != b.mean else 1.0)
    t = (a.mean - b.mean) / math.sqrt(var_a + var_b)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.count - 1) + var_b ** 2 / (b.count - 1))
    return Welch(t, df, t_two_sided_p(t, df))


def wilson(successes, trials, level=0.95):
    """Wilson score interval ``(low, high)`` of a binomial proportion; (0, 1) with no trials."""
    if trials == 0:
        return 0.0, 1.0
    z = t_quantile(0.5 + level / 2, 1e9)            # the normal quantile (t with df -> inf)
    share = successes / trials
    centre = (share + z * z / (2 * trials)) / (1 + z * z / trials)
    spread = z * math.sqrt(share * (1 - share) / trials + z * z / (4 * trials * trials)) \
        / (1 + z * z / trials)
    return max(0.0, centre - spread), min(1.0, centre + spread)
