"""Skellam noise shares and their exact Renyi-DP accounting.

Why Skellam. Each partner adds ``Sk(v) = Poisson(v/2) - Poisson(v/2)`` on every coordinate.
Independent Skellam variables sum to a Skellam variable *exactly*, so the noise in the released
sum over any ``h`` honest partners is exactly ``Sk(h*v)`` and its privacy is the single-mechanism
bound below, with no approximation term (a sum of discrete Gaussians is not a discrete Gaussian
and pays an extra ``tau`` term, Kairouz, Liu & Steinke 2021). Sampling is vectorised with
NumPy's Poisson sampler from an OS-entropy seed
(:func:`fedprofile.privacy.mechanisms.secure_rng`); like the
project's Gaussian noise it uses floating point internally, so Mironov's (CCS 2012) side channel
is not mitigated.

Accounting. The multidimensional Skellam mechanism with total variance ``V`` (integer units)
and integer sensitivities ``Delta_2``, ``Delta_1`` is ``(alpha, eps(alpha))``-RDP for integer
``alpha > 1`` with (Agarwal, Kairouz & Liu, NeurIPS 2021; the same expression as
``_skellam_rdp`` in google-research/federated ``distributed_dp/accounting_utils.py``)::

    eps(alpha) = alpha*D2**2/(2V) + min(((2alpha - 1)*D2**2 + 6*D1) / (4V**2), 3*D1/(2V))

A ``mu``-GDP Gaussian release has RDP curve ``alpha*mu**2/2``, so Gaussian and Skellam releases
compose by adding curves; (epsilon, delta) comes from the conversion of Canonne, Kamath &
Steinke (2020), also used by Google's dp-accounting, minimised over the order grid
:data:`ORDERS`::

    eps = rdp(alpha) + log1p(-1/alpha) - (log(delta) + log(alpha)) / (alpha - 1)
"""

from __future__ import annotations

import functools
import math

import numpy as np

from fedprofile.errors import ContractError

__all__ = [
    "ORDERS",
    "gaussian_rdp",
    "min_skellam_variance",
    "rdp_epsilon",
    "rdp_mu",
    "skellam_rdp",
    "skellam_share",
]

ORDERS: np.ndarray = np.unique(np.concatenate([
    np.arange(2, 129), np.round(np.geomspace(128, 100_000, 80))])).astype(np.float64)
"""Integer Renyi orders used by every curve and conversion here."""

_BISECTION_STEPS = 200


def skellam_share(variance: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``size`` independent Skellam variables of ``variance`` (``int64``).

    Examples
    --------
    >>> from fedprofile.privacy.mechanisms import secure_rng
    >>> skellam_share(0.0, 3, secure_rng(0)).tolist()
    [0, 0, 0]
    """
    if not (math.isfinite(variance) and variance >= 0):
        raise ContractError(f"A Skellam share variance must be finite and >= 0. "
                            f"Got {variance!r} instead.")
    if variance == 0:
        return np.zeros(size, dtype=np.int64)
    rate = variance / 2.0
    return rng.poisson(rate, size).astype(np.int64) - rng.poisson(rate, size).astype(np.int64)


def skellam_rdp(orders: np.ndarray, *, l2: float, l1: float, variance: float) -> np.ndarray:
    """RDP curve of the Skellam mechanism (Agarwal, Kairouz & Liu 2021).

    Parameters
    ----------
    orders : numpy.ndarray
        Integer orders ``alpha > 1``.
    l2, l1 : float
        L2 and L1 sensitivity in integer steps (after rounding).
    variance : float
        Total variance of the Skellam noise in the released sum, in integer steps squared.
    """
    alpha = np.asarray(orders, dtype=np.float64)
    if variance <= 0:
        return np.full(alpha.shape, math.inf)
    base = alpha * l2**2 / (2.0 * variance)
    extra = np.minimum(((2.0 * alpha - 1.0) * l2**2 + 6.0 * l1) / (4.0 * variance**2),
                       3.0 * l1 / (2.0 * variance))
    return base + extra


def gaussian_rdp(orders: np.ndarray, mu: float) -> np.ndarray:
    """RDP curve ``alpha * mu**2 / 2`` of a ``mu``-GDP Gaussian release."""
    return np.asarray(orders, dtype=np.float64) * mu * mu / 2.0


def rdp_epsilon(rdp: np.ndarray, delta: float, orders: np.ndarray = ORDERS) -> float:
    """Convert an RDP curve to epsilon at ``delta`` (Canonne, Kamath & Steinke 2020).

    Examples
    --------
    >>> round(rdp_epsilon(gaussian_rdp(ORDERS, 1.0), 1e-6), 3)
    5.222
    """
    if not 0 < delta < 1:
        raise ContractError(f"The 'delta' parameter must be in (0, 1). Got {delta!r} instead.")
    alpha = np.asarray(orders, dtype=np.float64)
    eps = np.asarray(rdp) + np.log1p(-1.0 / alpha) - (math.log(delta) + np.log(alpha)) / (
        alpha - 1.0)
    return max(0.0, float(np.min(eps)))


def rdp_mu(epsilon: float, delta: float) -> float:
    """Largest ``mu`` whose Gaussian RDP curve converts to at most ``epsilon`` at ``delta``.

    This is the run-level budget, in GDP-equivalent units, for a run accounted in RDP: release
    ``i`` may have any curve below ``gaussian_rdp(ORDERS, mu_i)`` with ``sum(mu_i**2) = mu**2``.
    """
    if not (epsilon > 0):
        raise ContractError(f"The 'epsilon' parameter must be in (0, inf]. Got {epsilon!r}.")
    if math.isinf(epsilon):
        return math.inf
    lo, hi = 0.0, 1.0
    while rdp_epsilon(gaussian_rdp(ORDERS, hi), delta) < epsilon:
        lo, hi = hi, 2.0 * hi
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if rdp_epsilon(gaussian_rdp(ORDERS, mid), delta) <= epsilon:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return lo


@functools.lru_cache(maxsize=1024)
def min_skellam_variance(*, l2: float, l1: float, mu: float) -> float:
    """Smallest total variance whose Skellam curve is below ``alpha*mu**2/2`` at every order.

    A release calibrated this way costs no more, in RDP, than a ``mu``-GDP Gaussian release.
    The search is cached: both sides plan every round's release from the same public values.
    """
    if not (mu > 0 and math.isfinite(mu)):
        raise ContractError(f"The per-release 'mu' must be in (0, inf). Got {mu!r} instead.")
    target = gaussian_rdp(ORDERS, mu)

    def fits(variance: float) -> bool:
        return bool(np.all(skellam_rdp(ORDERS, l2=l2, l1=l1, variance=variance) <= target))

    lo = (l2 / mu) ** 2
    hi = 2.0 * lo
    while not fits(hi):
        lo, hi = hi, 2.0 * hi
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if fits(mid):
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * hi:
            break
    return hi
