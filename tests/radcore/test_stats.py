"""Seeded statistical tests of the null distributions and Fisher's combination."""

import math

import mpmath
import numpy as np
import pytest
from scipy import stats as sps

from radcore.stats import cosine_log_pvalue, fisher_log_pvalue, log10, log_betainc_upper


def _random_units(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    u = rng.standard_normal((n, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [3, 8, 64, 512])
def test_cosine_pvalues_uniform_under_h0(dim):
    rng = np.random.default_rng(1000 + dim)
    w = rng.standard_normal(dim)  # a fixed "classifier row"
    u = _random_units(rng, 4000, dim)  # random carriers the model never saw
    cos = u @ (w / np.linalg.norm(w))
    p = np.exp(cosine_log_pvalue(cos, dim))
    assert sps.kstest(p, "uniform").pvalue > 0.01
    # False-positive rate at 5%: binomial sd is 0.34% at n = 4000.
    assert abs((p < 0.05).mean() - 0.05) < 0.015


def test_wrong_dimension_is_detected():
    """The calibration test has power: the null of the wrong dimension is rejected."""
    rng = np.random.default_rng(7)
    dim = 8
    cos = _random_units(rng, 4000, dim)[:, 0]
    p_wrong = np.exp(cosine_log_pvalue(cos, dim + 4))
    assert sps.kstest(p_wrong, "uniform").pvalue < 1e-6


@pytest.mark.parametrize("dim,c", [(16, 0.3), (64, 0.25), (256, 0.12)])
def test_closed_form_tail_matches_monte_carlo(dim, c):
    rng = np.random.default_rng(dim)
    n = 200_000
    cos = _random_units(rng, n, dim)[:, 0]
    mc = (cos >= c).mean()
    exact = math.exp(float(cosine_log_pvalue(c, dim)))
    sd = math.sqrt(exact * (1 - exact) / n)
    assert abs(mc - exact) < 4 * sd


@pytest.mark.parametrize("dim,c", [(256, 0.5), (256, 0.9), (512, 0.99), (2048, 0.6), (64, 0.999)])
def test_extreme_tail_is_exact_in_log_space(dim, c):
    a = (dim - 1) / 2
    mpmath.mp.dps = 60
    # Upper tail of Beta(a, a) at (1 + c) / 2 is its lower tail at (1 - c) / 2 (symmetry);
    # mpmath's integral from x to 1 loses precision here, the lower tail does not.
    z = (1 - mpmath.mpf(c)) / 2
    exact = mpmath.log(mpmath.betainc(a, a, 0, z, regularized=True))
    got = float(cosine_log_pvalue(c, dim))
    assert math.isfinite(got)
    assert got == pytest.approx(float(exact), rel=1e-9)


def test_betainc_upper_agrees_with_scipy_in_range():
    for a, b, x in [(2.0, 3.0, 0.4), (31.5, 31.5, 0.7), (100.0, 100.0, 0.6)]:
        assert log_betainc_upper(a, b, x) == pytest.approx(math.log(sps.beta.sf(x, a, b)), rel=1e-9)


def test_fisher_matches_scipy_where_finite():
    rng = np.random.default_rng(3)
    for _ in range(50):
        k = int(rng.integers(1, 30))
        p = rng.uniform(1e-6, 1, size=k)
        expected = sps.combine_pvalues(p, method="fisher").pvalue
        got = math.exp(fisher_log_pvalue(np.log(p)))
        assert got == pytest.approx(expected, rel=1e-9)


def test_fisher_stays_finite_and_exact_where_scipy_underflows():
    log_p = np.full(10, math.log(1e-40))  # combined p is near 1e-372
    assert sps.combine_pvalues(np.full(10, 1e-40), method="fisher").pvalue == 0.0
    got = fisher_log_pvalue(log_p)
    mpmath.mp.dps = 60
    t = -2 * mpmath.mpf(float(log_p.sum()))
    exact = mpmath.log(mpmath.gammainc(10, t / 2, mpmath.inf, regularized=True))
    assert math.isfinite(got)
    assert got == pytest.approx(float(exact), rel=1e-12)
    assert log10(got) < -300


def test_fisher_uniform_under_h0():
    rng = np.random.default_rng(11)
    combined = np.exp([fisher_log_pvalue(np.log(rng.uniform(size=10))) for _ in range(3000)])
    assert sps.kstest(combined, "uniform").pvalue > 0.01


def test_bad_inputs_raise_with_a_fix():
    with pytest.raises(ValueError, match="ln p"):
        fisher_log_pvalue([0.5])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        cosine_log_pvalue(1.5, 10)
    with pytest.raises(ValueError, match="dim"):
        cosine_log_pvalue(0.1, 1)
