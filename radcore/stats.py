"""Null distributions and p-value combination, computed in log space.

Everything here returns natural-log p-values (``log_p <= 0``) so that results far below
1e-300 stay finite and exact; :func:`log10` converts for reporting.

Cosine null: for a fixed vector w in R^d and a direction u drawn uniformly on the sphere,
``(cos(w, u) + 1) / 2 ~ Beta((d - 1) / 2, (d - 1) / 2)`` (Sablayrolles et al. 2020, sec. 4).
The one-sided p-value of an observed cosine c is the upper tail ``P(cos >= c)``.

Fisher: ``-2 sum ln p_i ~ chi2(2k)`` under H0 for k independent p-values; the chi2 survival
function with an even number of degrees of freedom has the closed form
``exp(-T/2) sum_{j<k} (T/2)^j / j!``, evaluated here with a log-sum-exp.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = [
    "cosine_log_pvalue",
    "fisher_log_pvalue",
    "log10",
    "log_betainc_upper",
]

_LN10 = math.log(10.0)
# Below this, scipy's betainc loses relative precision (and underflows to 0 near 1e-308),
# so the log-space series takes over.
_SCIPY_FLOOR = 1e-280


def log10(log_p: float | np.ndarray) -> float | np.ndarray:
    """Natural-log p-value(s) to log10."""
    return np.asarray(log_p) / _LN10 if np.ndim(log_p) else float(log_p) / _LN10


def _log_betainc_lower_series(a: float, b: float, z: float) -> float:
    """ln I_z(a, b) for small z by the hypergeometric series.

    I_z(a, b) = z^a (1-z)^b / (a B(a, b)) * sum_n (a+b)_n / (a+1)_n z^n   (DLMF 8.17.8)
    The term ratio is (a+b+n)/(a+1+n) * z, below 1 whenever z < (a+1)/(a+b): the callers only
    use it in the far tail, where z is small.
    """
    log_prefix = a * math.log(z) + b * math.log1p(-z) - math.log(a) - special.betaln(a, b)
    total, term, n = 1.0, 1.0, 0
    while True:
        term *= (a + b + n) / (a + 1 + n) * z
        total += term
        n += 1
        if term < 1e-17 * total or n > 100_000:
            break
    return log_prefix + math.log(total)


def log_betainc_upper(a: float, b: float, x: float) -> float:
    """ln P(X >= x) for X ~ Beta(a, b), exact far below the float range.

    Uses scipy where the tail is representable and a log-space series beyond it.
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"Beta parameters must be positive, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return -math.inf
    # Upper tail of Beta(a, b) at x is the lower tail of Beta(b, a) at 1 - x.
    tail = float(special.betaincc(a, b, x))
    if tail > _SCIPY_FLOOR:
        return math.log(tail)
    return _log_betainc_lower_series(b, a, 1.0 - x)


def cosine_log_pvalue(cos: float | np.ndarray, dim: int) -> np.ndarray:
    """ln P(cos(w, u) >= cos) for u uniform on the unit sphere of R^dim.

    cos: scalar or array of cosines in [-1, 1]; dim: the dimension d >= 2.
    Returns an array of natural-log p-values with the shape of ``cos``.
    """
    if dim < 2:
        raise ValueError(f"dim must be >= 2 for a cosine null, got {dim}")
    c = np.asarray(cos, dtype=np.float64)
    if np.any(np.abs(c) > 1.0 + 1e-9) or np.any(~np.isfinite(c)):
        raise ValueError("cosines must be finite and lie in [-1, 1]")
    a = (dim - 1) / 2.0
    x = (np.clip(c, -1.0, 1.0) + 1.0) / 2.0
    out = np.array([log_betainc_upper(a, a, float(v)) for v in x.ravel()], dtype=np.float64)
    return out.reshape(c.shape)


def fisher_log_pvalue(log_pvalues: np.ndarray | list[float]) -> float:
    """Fisher's combination of k independent p-values, all in natural logs.

    T = -2 sum ln p_i; ln P(chi2_{2k} >= T) = -T/2 + ln sum_{j<k} (T/2)^j / j!.
    """
    lp = np.asarray(log_pvalues, dtype=np.float64).ravel()
    if lp.size == 0:
        raise ValueError("Fisher's method needs at least one p-value")
    if np.any(lp > 1e-12) or np.any(np.isnan(lp)):
        raise ValueError("log p-values must be <= 0 (pass ln p, not p)")
    if np.any(np.isneginf(lp)):
        return -math.inf
    half_t = -float(lp.sum())  # T / 2
    if half_t <= 0.0:
        return 0.0
    j = np.arange(lp.size, dtype=np.float64)
    log_terms = j * math.log(half_t) - special.gammaln(j + 1.0)
    return min(0.0, -half_t + float(special.logsumexp(log_terms)))
