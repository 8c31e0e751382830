"""Skellam shares, their RDP accounting against numeric oracles, planning and calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import poisson

from fedprofile.errors import ContractError, ProtocolError
from fedprofile.privacy.accounting import gdp_epsilon
from fedprofile.privacy.mechanisms import secure_rng
from fedprofile.privacy.secagg.noise import (
    ORDERS,
    gaussian_rdp,
    min_skellam_variance,
    rdp_epsilon,
    rdp_mu,
    skellam_rdp,
    skellam_share,
)
from fedprofile.privacy.secagg.plan import plan_secagg
from fedprofile.privacy.secagg.simulate import simulate_release

# ---------------------------------------------------------------------------------------------
# Independent oracle: Renyi divergence and privacy profile of Skellam noise computed by brute
# force, in log space, from its definition as a difference of two Poisson variables.
# ---------------------------------------------------------------------------------------------


def _logpmf(variance: float, shift: int, support: np.ndarray) -> np.ndarray:
    k = np.abs(support - shift)[:, None]
    j = np.arange(0, int(30 * math.sqrt(variance)) + 300)[None, :]
    lam = variance / 2
    return logsumexp(poisson.logpmf(j + k, lam) + poisson.logpmf(j, lam), axis=1)


def numeric_rdp(alpha: float, shift: np.ndarray, variance: float) -> float:
    """D_alpha(Sk + shift || Sk), additive over independent coordinates."""
    support = np.arange(-int(25 * math.sqrt(variance)) - 150, int(25 * math.sqrt(variance)) + 151)
    lp = _logpmf(variance, 0, support)
    total = 0.0
    for e in shift:
        lq = _logpmf(variance, int(e), support)
        total += logsumexp(alpha * lq + (1 - alpha) * lp) / (alpha - 1)
    return total


def numeric_delta(epsilon: float, shift: int, variance: float) -> float:
    """Exact delta(epsilon) of the 1-D Skellam mechanism with integer sensitivity ``shift``."""
    support = np.arange(-int(25 * math.sqrt(variance)) - 150, int(25 * math.sqrt(variance)) + 151)
    lp, lq = _logpmf(variance, shift, support), _logpmf(variance, 0, support)
    with np.errstate(over="ignore"):
        gap = np.exp(lp) - np.exp(epsilon + lq)
    return float(gap[gap > 0].sum())


@pytest.mark.parametrize("variance", [12.0, 40.0, 300.0])
@pytest.mark.parametrize("shift", [[1], [3], [2, -1, 1], [4, 0, -3, 1]])
def test_skellam_rdp_bounds_the_numeric_divergence(variance: float, shift: list[int]) -> None:
    e = np.array(shift)
    l2, l1 = float(np.linalg.norm(e)), float(np.abs(e).sum())
    for alpha in (2, 3, 8, 32):
        bound = skellam_rdp(np.array([alpha]), l2=l2, l1=l1, variance=variance)[0]
        exact = numeric_rdp(alpha, e, variance)
        assert exact <= bound * (1 + 1e-9)
        if alpha <= 8 and variance >= 40:
            assert bound <= exact * 1.25  # and tight where the noise is not tiny


def test_reported_epsilon_holds_against_the_exact_privacy_profile() -> None:
    variance, shift, delta = 400.0, 10, 1e-6
    eps = rdp_epsilon(skellam_rdp(ORDERS, l2=shift, l1=shift, variance=variance), delta)
    assert numeric_delta(eps, shift, variance) <= delta
    assert numeric_delta(eps * 0.8, shift, variance) > delta * 0.01  # not absurdly loose


def test_rdp_conversion_is_sound_and_close_to_exact_gdp() -> None:
    for mu in (0.05, 0.3, 1.0, 3.0):
        eps_rdp = rdp_epsilon(gaussian_rdp(ORDERS, mu), 1e-6)
        eps_gdp = gdp_epsilon(mu, 1e-6)
        assert eps_gdp <= eps_rdp <= 1.12 * eps_gdp
    mu = rdp_mu(1.0, 1e-6)
    assert rdp_epsilon(gaussian_rdp(ORDERS, mu), 1e-6) <= 1.0
    assert rdp_epsilon(gaussian_rdp(ORDERS, mu * 1.001), 1e-6) > 1.0
    assert rdp_mu(math.inf, 1e-6) == math.inf


def test_min_variance_dominates_the_gaussian_curve_and_is_minimal() -> None:
    v = min_skellam_variance(l2=1000.0, l1=30_000.0, mu=0.5)
    curve = skellam_rdp(ORDERS, l2=1000.0, l1=30_000.0, variance=v)
    assert np.all(curve <= gaussian_rdp(ORDERS, 0.5))
    assert not np.all(skellam_rdp(ORDERS, l2=1000.0, l1=30_000.0, variance=v * 0.999)
                      <= gaussian_rdp(ORDERS, 0.5))
    assert v / (1000.0 / 0.5) ** 2 < 1.001  # the discrete overhead is tiny at this resolution


def test_skellam_share_moments_and_entropy_seeding() -> None:
    z = skellam_share(2500.0, 200_000, secure_rng(0))
    assert z.dtype == np.int64
    assert abs(z.mean()) < 5 * 50 / math.sqrt(200_000)
    assert abs(z.std() / 50 - 1) < 0.01
    assert not np.array_equal(skellam_share(9.0, 50, secure_rng()),
                              skellam_share(9.0, 50, secure_rng()))
    with pytest.raises(ContractError, match="variance"):
        skellam_share(-1.0, 3, secure_rng(0))


def test_plan_accounting_uses_rounded_sensitivity_and_guaranteed_shares() -> None:
    plan = plan_secagg(partners=10, dropouts=3, dim=200, bound=1e4, sensitivity=2.0, mu=0.3)
    assert plan.rounded_l2 == plan.quantization.scale * 2.0 + math.sqrt(200)
    assert plan.guaranteed_variance == pytest.approx(7 * plan.share_variance)
    assert np.all(plan.rdp() <= gaussian_rdp(ORDERS, 0.3))
    # the release is at most as costly as the mu-GDP budget, and more shares only help
    assert plan.epsilon(1e-6) <= rdp_epsilon(gaussian_rdp(ORDERS, 0.3), 1e-6)
    assert plan.epsilon(1e-6, honest_shares=10) < plan.epsilon(1e-6)
    assert plan.noise_sd == pytest.approx(2.0 / 0.3, rel=1e-3)
    fields = plan.ledger_fields(present=9)
    assert fields["mechanism"] == "skellam" and fields["shares_present"] == 9
    assert fields["guaranteed_variance"] == plan.guaranteed_variance
    with pytest.raises(ProtocolError, match="at least 7"):
        plan.check_survivors(6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"partners": 1}, "partners"), ({"dropouts": 9}, "dropouts"),
    ({"threshold": 5}, "threshold"), ({"threshold": 11}, "threshold"),
    ({"sensitivity": 0.0}, "sensitivity"), ({"mu": 0.0}, "mu"), ({"mu": math.nan}, "mu")])
def test_plan_refuses_bad_parameters(kwargs: dict, match: str) -> None:
    args = {"partners": 10, "dropouts": 2, "dim": 5, "bound": 10.0, "sensitivity": 1.0,
            "mu": 1.0, **kwargs}
    with pytest.raises(ContractError, match=match):
        plan_secagg(**args)


@pytest.mark.parametrize("dropped", [0, 2])
def test_calibration_aggregate_noise_sd_matches_plan(dropped: int) -> None:
    """Many seeded secagg releases of zero vectors: the noise in the sum has the planned sd."""
    m, t, dim = 7, 2, 400
    plan = plan_secagg(partners=m, dropouts=t, dim=dim, bound=50.0, sensitivity=1.0, mu=0.5)
    drops = {f"p{i}": (0, "mask") for i in range(dropped)}
    rng = secure_rng(11)
    zeros = {f"p{i}": np.zeros(dim) for i in range(m)}
    noise = np.concatenate([simulate_release(plan, zeros, rng, drops)[0] for _ in range(60)])
    expected = plan.noise_sd * math.sqrt((m - dropped) / (m - t))
    assert abs(noise.std() / expected - 1) < 0.05
    assert abs(noise.mean()) < 5 * expected / math.sqrt(noise.size)
    assert plan.noise_sd == pytest.approx(1.0 / 0.5, rel=1e-3)
