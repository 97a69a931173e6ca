"""jaxrnn.stats against published table values (Student-t quantiles, a worked Welch test and
Wilson interval) and its edge cases."""
import math

import pytest

from jaxrnn import stats


@pytest.mark.parametrize("df,quantile", [(1, 12.706204736), (2, 4.302652730), (4, 2.776445105),
                                         (10, 2.228138852), (30, 2.042272456)])
def test_t_quantiles_match_the_tables(df, quantile):
    assert stats.t_quantile(0.975, df) == pytest.approx(quantile, rel=1e-8)
    assert stats.t_two_sided_p(quantile, df) == pytest.approx(0.05, rel=1e-7)


def test_t_distribution_tails_and_the_normal_limit():
    assert stats.t_two_sided_p(0.0, 5) == pytest.approx(1.0)
    assert stats.t_two_sided_p(1.0, 1) == pytest.approx(0.5)          # Cauchy: atan(1) = pi/4
    assert stats.t_two_sided_p(math.inf, 3) == 0.0
    assert stats.t_quantile(0.975, 1e9) == pytest.approx(1.959963985, rel=1e-6)


def test_summary_uses_the_sample_standard_deviation_and_a_t_interval():
    summary = stats.summarize([1.0, 2.0, 3.0, 4.0, None, float("nan")])
    assert (summary.mean, summary.count) == (2.5, 4)
    assert summary.std == pytest.approx(math.sqrt(5 / 3))             # ddof 1
    assert summary.half_width == pytest.approx(3.182446305 * math.sqrt(5 / 3) / 2, rel=1e-8)
    assert stats.summarize([7.0]) == stats.Summary(7.0, 0.0, 1, None)
    assert stats.summarize([]).count == 0


def test_welch_matches_a_worked_example():
    # a = 1, 2, 3 (var 1), b = 4, 5, 7 (var 7/3): t = -3 1/3 / sqrt(10/9), df = 3.448
    test = stats.welch([1, 2, 3], [4, 5, 7])
    assert test.t == pytest.approx(-(16 / 3 - 2) / math.sqrt(1 / 3 + 7 / 9))
    assert test.df == pytest.approx((1 / 3 + 7 / 9) ** 2 / ((1 / 3) ** 2 / 2 + (7 / 9) ** 2 / 2))
    assert test.p == pytest.approx(stats.t_two_sided_p(test.t, test.df))
    assert 0.03 < test.p < 0.05
    assert stats.welch([1.0], [2.0, 3.0]) is None                     # one seed: untested
    assert stats.welch([1, 1], [1, 1]).p == 1.0 and stats.welch([1, 1], [2, 2]).p == 0.0


def test_wilson_interval():
    low, high = stats.wilson(3, 10)
    assert (low, high) == (pytest.approx(0.1078, abs=1e-4), pytest.approx(0.6032, abs=1e-4))
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(10, 10)[1] == pytest.approx(1.0)
    assert stats.wilson(0, 0) == (0.0, 1.0)
