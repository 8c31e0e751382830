"""Tests for exact Gaussian-DP accounting: golden values, composition, calibration, budgets."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import norm

from fedprofile.errors import BudgetExceededError, ContractError, UnsupportedEventError
from fedprofile.privacy.accounting import (
    GdpAccountant,
    compose_mu,
    gdp_delta,
    gdp_epsilon,
    gdp_mu,
    split_mu,
)
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent
from fedprofile.server.kmeans import plan_kmeans

# ---------------------------------------------------------------------------------------------
# Independent oracle: the closed form of Dong, Roth & Su (2022), Cor. 2.13, solved with brentq.
# ---------------------------------------------------------------------------------------------


def _oracle_delta(epsilon: float, mu: float) -> float:
    return float(norm.cdf(-epsilon / mu + mu / 2.0)
                 - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2.0))


def _oracle_epsilon(mu: float, delta: float) -> float:
    return float(brentq(lambda e: _oracle_delta(e, mu) - delta, 0.0, 200.0,
                        xtol=1e-14, rtol=1e-15, maxiter=500))


def _oracle_mu(epsilon: float, delta: float) -> float:
    return float(brentq(lambda m: _oracle_delta(epsilon, m) - delta, 1e-6, 50.0,
                        xtol=1e-15, rtol=1e-15, maxiter=500))


def _gaussian(z: float, *, component: str = "sums", rnd: int = 0) -> GaussianEvent:
    return GaussianEvent(noise_multiplier=z, sensitivity=1.0, stage="kmeans", round=rnd,
                         component=component)


def _events(zs: Sequence[float]) -> list[PrivacyEvent]:
    return [_gaussian(z, rnd=i) for i, z in enumerate(zs)]


# Golden values pinned from the oracle above (17 significant digits).
GOLDEN = [
    (0.5, 1e-5, 1.9930914044151173),
    (1.0, 1e-6, 4.886554117462211),
    (2.0, 1e-5, 9.997256146434298),
    (0.1, 1e-3, 0.19753397323970995),
    (3.0, 1e-9, 21.94558999096669),
]
GOLDEN_IDS = ["mu0.5-d1e-5", "mu1-d1e-6", "mu2-d1e-5", "mu0.1-d1e-3", "mu3-d1e-9"]


# --- golden values ---------------------------------------------------------------------------


@pytest.mark.parametrize(("mu", "delta", "golden"), GOLDEN, ids=GOLDEN_IDS)
def test_gdp_epsilon_matches_the_closed_form_oracle_to_many_digits(
        mu: float, delta: float, golden: float) -> None:
    # Execute
    oracle = _oracle_epsilon(mu, delta)
    epsilon = gdp_epsilon(mu, delta)

    # Assert
    assert oracle == pytest.approx(golden, rel=1e-12)
    assert epsilon == pytest.approx(golden, rel=1e-11)
    assert epsilon >= oracle * (1 - 1e-12)  # reported on the safe (upper) side


@pytest.mark.parametrize(("mu", "delta", "golden"), GOLDEN, ids=GOLDEN_IDS)
def test_gdp_delta_at_the_reported_epsilon_meets_the_target_delta(
        mu: float, delta: float, golden: float) -> None:
    # Prepare
    epsilon = gdp_epsilon(mu, delta)

    # Execute
    achieved = gdp_delta(epsilon, mu)

    # Assert
    assert achieved <= delta
    assert achieved == pytest.approx(delta, rel=1e-9)
    assert achieved == pytest.approx(_oracle_delta(epsilon, mu), rel=1e-8)


@pytest.mark.parametrize(("mu", "expected"), [(0.0, 0.0), (math.inf, math.inf)],
                         ids=["mu-zero-is-perfectly-private", "mu-inf-is-non-private"])
def test_gdp_epsilon_edge_cases(mu: float, expected: float) -> None:
    # Execute / Assert
    assert gdp_epsilon(mu, 1e-6) == expected


def test_gdp_epsilon_is_zero_when_delta_already_covers_the_whole_guarantee() -> None:
    # Prepare: at epsilon = 0, delta(0) = Phi(mu/2) - Phi(-mu/2) ~ 0.004 for mu = 0.01
    mu = 0.01
    delta_at_zero = 2.0 * norm.cdf(mu / 2.0) - 1.0

    # Execute / Assert
    assert gdp_delta(0.0, mu) == pytest.approx(delta_at_zero, rel=1e-9)
    assert gdp_epsilon(mu, delta_at_zero * 1.01) == 0.0
    assert gdp_epsilon(mu, delta_at_zero * 0.5) > 0.0


# --- composition -----------------------------------------------------------------------------

SEQUENCES = [
    (1.0, 2.0, 3.0, 1.5, 0.8),
    (2.0, 2.0, 2.0, 2.0),
    (5.0,) * 10,
    (0.9, 4.0),
]
SEQUENCE_IDS = ["five-mixed", "four-equal", "ten-equal-weak", "two-uneven"]


@pytest.mark.parametrize("zs", SEQUENCES, ids=SEQUENCE_IDS)
def test_accountant_composes_gaussian_releases_exactly(zs: tuple[float, ...]) -> None:
    # Prepare
    delta = 1e-5
    mu_by_hand = math.sqrt(sum(1.0 / z**2 for z in zs))
    acc = GdpAccountant(delta=delta)

    # Execute
    for event in _events(zs):
        acc.compose(event)

    # Assert
    assert len(acc) == len(zs)
    assert acc.mu == pytest.approx(mu_by_hand, rel=1e-14)
    assert acc.get_epsilon() == pytest.approx(gdp_epsilon(mu_by_hand, delta), rel=1e-14)
    assert acc.get_epsilon() == pytest.approx(_oracle_epsilon(mu_by_hand, delta), rel=1e-10)


def test_four_releases_at_multiplier_two_compose_to_one_gdp() -> None:
    # Prepare: sqrt(4 * (1/2)**2) = 1, whose epsilon at 1e-6 is pinned above
    acc = GdpAccountant(delta=1e-6)

    # Execute
    acc.compose(*_events([2.0, 2.0, 2.0, 2.0]))

    # Assert
    assert acc.mu == pytest.approx(1.0, rel=1e-15)
    assert acc.get_epsilon() == pytest.approx(4.886554117462211, rel=1e-11)


@pytest.mark.parametrize(("zs", "delta"), [
    ((1.0, 2.0, 3.0, 1.5, 0.8), 1e-5),
    ((5.0,) * 10, 1e-6),
    (tuple(e.noise_multiplier for e in plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3,
                                                   norm_bound=2.0).events()), 1e-6),
], ids=["five-mixed", "ten-equal", "kmeans-plan-eps1"])
def test_exact_gdp_epsilon_agrees_with_opacus_prv_accountant(
        zs: tuple[float, ...], delta: float) -> None:
    # Prepare
    accountants = pytest.importorskip("opacus.accountants")
    prv = accountants.PRVAccountant()
    exact = gdp_epsilon(math.sqrt(sum(1.0 / z**2 for z in zs)), delta)

    # Execute
    with warnings.catch_warnings():
        # Opacus warns about log(1 - q) at q = 1 and about its RDP alpha grid (domain sizing)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        for z in zs:
            prv.step(noise_multiplier=z, sample_rate=1.0)
        prv_epsilon = prv.get_epsilon(delta=delta)

    # Assert: PRV is a numerical upper bound of the exact value, within 1.5 %
    assert exact <= prv_epsilon * 1.001
    assert prv_epsilon == pytest.approx(exact, rel=0.015)


def test_compose_mu_is_root_sum_of_squares_and_infinite_with_any_non_private_part() -> None:
    # Execute / Assert
    assert compose_mu([0.3, 0.4]) == pytest.approx(0.5, rel=1e-15)
    assert compose_mu([]) == 0.0
    assert compose_mu([0.3, math.inf, 0.4]) == math.inf


# --- calibration -----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(epsilon=st.floats(min_value=0.1, max_value=10.0),
       log_delta=st.floats(min_value=-9.0, max_value=-3.0))
def test_calibrated_mu_never_overshoots_the_target_epsilon(epsilon: float,
                                                           log_delta: float) -> None:
    # Prepare
    delta = 10.0**log_delta

    # Execute
    achieved = gdp_epsilon(gdp_mu(epsilon, delta), delta)

    # Assert
    assert achieved <= epsilon * (1 + 1e-9)
    assert achieved == pytest.approx(epsilon, rel=1e-6)


@pytest.mark.parametrize(("epsilon", "delta"), [(1.0, 1e-6), (0.25, 1e-8), (8.0, 1e-5)],
                         ids=["eps1", "eps0.25", "eps8"])
def test_gdp_mu_matches_the_oracle_and_lies_on_the_safe_side(epsilon: float,
                                                             delta: float) -> None:
    # Execute
    mu = gdp_mu(epsilon, delta)

    # Assert
    assert mu == pytest.approx(_oracle_mu(epsilon, delta), rel=1e-9)
    assert gdp_delta(epsilon, mu) <= delta


def test_gdp_mu_of_infinite_epsilon_is_infinite() -> None:
    # Execute / Assert
    assert gdp_mu(math.inf, 1e-6) == math.inf


@pytest.mark.parametrize(("mu_total", "weights"), [
    (1.3, (1.0, 2.0, 3.5)),
    (0.2, (1.0,)),
    (4.0, (0.1, 0.1, 0.1, 10.0)),
], ids=["three-parts", "one-part", "skewed"])
def test_split_mu_parts_compose_back_to_the_total(mu_total: float,
                                                  weights: tuple[float, ...]) -> None:
    # Execute
    parts = split_mu(mu_total, weights)

    # Assert
    assert len(parts) == len(weights)
    assert compose_mu(parts) == pytest.approx(mu_total, rel=1e-14)
    ratios = [p**2 / w for p, w in zip(parts, weights, strict=True)]
    assert ratios == pytest.approx([ratios[0]] * len(ratios), rel=1e-12)


def test_split_mu_by_hand_and_for_an_infinite_budget() -> None:
    # Execute / Assert: mu_i**2 proportional to (1, 3) with total 2**2 = 4 -> (1, 3)
    assert split_mu(2.0, [1.0, 3.0]) == pytest.approx([1.0, math.sqrt(3.0)], rel=1e-15)
    assert split_mu(math.inf, [1.0, 2.0]) == [math.inf, math.inf]


@pytest.mark.parametrize("weights", [[], [0.0], [1.0, -1.0], [math.inf], [math.nan]],
                         ids=["empty", "zero", "negative", "inf", "nan"])
def test_split_mu_refuses_invalid_weights(weights: list[float]) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="weights"):
        split_mu(1.0, weights)


# --- the k-means plan ------------------------------------------------------------------------


def test_kmeans_plan_splits_the_budget_as_documented() -> None:
    # Prepare: weights are init 0.2 * 6 / 0.8 = 1.5 and Lloyd (1, 1, 4), total 7.5;
    # inside a round the sums get 3/4 of mu_r**2 and the counts 1/4.
    mu = gdp_mu(1.0, 1e-6)
    expected_mu_r = [mu * math.sqrt(w / 7.5) for w in (1.5, 1.0, 1.0, 4.0)]

    # Execute
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=2.0)

    # Assert
    assert [(r.stage, r.round) for r in plan.rounds] == [
        ("kmeans-init", 0), ("kmeans", 1), ("kmeans", 2), ("kmeans", 3)]
    for rnd, mu_r in zip(plan.rounds, expected_mu_r, strict=True):
        assert rnd.sum_noise_multiplier == pytest.approx(1 / (mu_r * math.sqrt(0.75)), rel=1e-12)
        assert rnd.count_noise_multiplier == pytest.approx(1 / (mu_r * 0.5), rel=1e-12)
    events = plan.events()
    assert len(events) == 8
    assert {e.sensitivity for e in events if e.component == "sums"} == {2.0}
    assert {e.sensitivity for e in events if e.component == "counts"} == {1.0}


@pytest.mark.parametrize(("epsilon", "rounds", "init"), [
    (1.0, 3, "overcluster"),
    (0.5, 5, "random"),
    (3.0, 1, "overcluster"),
], ids=["eps1-3rounds", "eps0.5-5rounds-random", "eps3-1round"])
def test_composing_every_planned_event_spends_exactly_the_target_epsilon(
        epsilon: float, rounds: int, init: str) -> None:
    # Prepare
    plan = plan_kmeans(epsilon=epsilon, delta=1e-6, lloyd_rounds=rounds, norm_bound=2.0,
                       init=init)  # type: ignore[arg-type]
    acc = GdpAccountant(delta=1e-6)

    # Execute
    acc.compose(*plan.events())

    # Assert
    spent = acc.get_epsilon()
    assert abs(spent - epsilon) <= 1e-9 * epsilon
    assert spent <= epsilon * (1 + 1e-12)
    assert acc.mu == pytest.approx(plan.mu, rel=1e-12)


def test_brief_example_plan_never_spends_above_one() -> None:
    # Prepare
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=2.0)
    acc = GdpAccountant(delta=1e-6)

    # Execute
    acc.compose(*plan.events())

    # Assert
    assert acc.get_epsilon() <= 1.0
    assert acc.get_epsilon() == pytest.approx(1.0, abs=1e-9)


def test_non_private_plan_has_non_private_events_and_infinite_epsilon() -> None:
    # Prepare
    plan = plan_kmeans(epsilon=math.inf, delta=1e-6, lloyd_rounds=3, norm_bound=2.0)
    acc = GdpAccountant(delta=1e-6)

    # Execute
    acc.compose(*plan.events())

    # Assert
    assert plan.non_private
    assert len(plan.events()) == 8
    assert all(isinstance(e, NonPrivateEvent) for e in plan.events())
    assert all(r.sum_noise_multiplier == r.count_noise_multiplier == 0.0 for r in plan.rounds)
    assert acc.mu == math.inf
    assert acc.get_epsilon() == math.inf


@pytest.mark.parametrize("epsilon", [0.1, 0.5], ids=["eps0.1", "eps0.5"])
def test_accountant_with_a_budget_accepts_a_plan_calibrated_to_that_budget(
        epsilon: float) -> None:
    # Prepare
    plan = plan_kmeans(epsilon=epsilon, delta=1e-6, lloyd_rounds=3, norm_bound=2.0)
    acc = GdpAccountant(delta=1e-6, max_epsilon=epsilon)

    # Execute
    acc.compose(*plan.events())

    # Assert
    assert len(acc) == len(plan.events())


# --- budgets ---------------------------------------------------------------------------------


def test_compose_refuses_an_over_budget_spend_and_records_nothing() -> None:
    # Prepare: mu = 0.5 at delta = 1e-5 spends 1.9931 (pinned above); budget 3
    acc = GdpAccountant(delta=1e-5, max_epsilon=3.0)
    acc.compose(_gaussian(2.0))
    before_events, before_mu = acc.events, acc.mu
    after_by_hand = _oracle_epsilon(math.sqrt(0.5**2 + 1.0**2), 1e-5)
    remaining_by_hand = 3.0 - 1.9930914044151173

    # Execute
    with pytest.raises(BudgetExceededError) as info:
        acc.compose(_gaussian(1.0, component="counts"))

    # Assert
    message = str(info.value)
    assert f"{after_by_hand:.4g}" in message
    assert f"{remaining_by_hand:.4g}" in message
    assert "budget is 3" in message
    assert acc.events == before_events
    assert len(acc) == 1
    assert acc.mu == before_mu


def test_compose_refuses_a_batch_atomically_when_only_its_tail_is_over_budget() -> None:
    # Prepare
    acc = GdpAccountant(delta=1e-5, max_epsilon=3.0)

    # Execute
    with pytest.raises(BudgetExceededError):
        acc.compose(_gaussian(2.0), _gaussian(1.0))

    # Assert
    assert acc.events == ()
    assert acc.mu == 0.0


def test_check_is_a_dry_run() -> None:
    # Prepare
    acc = GdpAccountant(delta=1e-5, max_epsilon=3.0)
    acc.compose(_gaussian(2.0))

    # Execute
    acc.check(_gaussian(10.0))
    dry = acc.epsilon_after([_gaussian(10.0)])

    # Assert
    assert len(acc) == 1
    assert acc.mu == pytest.approx(0.5)
    assert dry == pytest.approx(_oracle_epsilon(math.sqrt(0.25 + 0.01), 1e-5), rel=1e-10)
    with pytest.raises(BudgetExceededError):
        acc.check(_gaussian(1.0))
    assert len(acc) == 1


def test_compose_rejects_an_event_it_cannot_account() -> None:
    # Prepare
    acc = GdpAccountant(delta=1e-6)

    # Execute / Assert
    with pytest.raises(UnsupportedEventError, match="cannot compose"):
        acc.compose(object())  # type: ignore[arg-type]
    assert len(acc) == 0


@pytest.mark.parametrize("delta", [0.0, 1.0, -1e-6, math.nan, "1e-6", 2],
                         ids=["zero", "one", "negative", "nan", "string", "int-two"])
def test_invalid_delta_raises_contract_error_naming_delta(delta: object) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="'delta'"):
        GdpAccountant(delta=delta)  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="'delta'"):
        gdp_epsilon(1.0, delta)  # type: ignore[arg-type]
    with pytest.raises(ContractError, match="'delta'"):
        gdp_mu(1.0, delta)  # type: ignore[arg-type]


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, -math.inf],
                         ids=["zero", "negative", "nan", "minus-inf"])
def test_invalid_epsilon_raises_contract_error_naming_epsilon(epsilon: float) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="'epsilon'"):
        gdp_mu(epsilon, 1e-6)


@pytest.mark.parametrize("max_epsilon", [0.0, -1.0, math.nan],
                         ids=["zero", "negative", "nan"])
def test_invalid_budget_raises_contract_error_naming_max_epsilon(max_epsilon: float) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="'max_epsilon'"):
        GdpAccountant(delta=1e-6, max_epsilon=max_epsilon)


@pytest.mark.parametrize("mu", [-0.1, math.nan], ids=["negative", "nan"])
def test_invalid_mu_raises_contract_error_naming_mu(mu: float) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="mu"):
        gdp_epsilon(mu, 1e-6)


@pytest.mark.parametrize("epsilon", ["1.0", True], ids=["string", "bool"])
def test_non_numeric_epsilon_raises_contract_error_naming_epsilon(epsilon: object) -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="'epsilon'"):
        gdp_mu(epsilon, 1e-6)  # type: ignore[arg-type]


def test_string_budget_raises_contract_error_naming_max_epsilon() -> None:
    # Execute / Assert
    with pytest.raises(ContractError, match="'max_epsilon'"):
        GdpAccountant(delta=1e-6, max_epsilon="1.0")  # type: ignore[arg-type]


def test_skellam_releases_compose_in_rdp_never_below_their_gaussian_gdp() -> None:
    from fedprofile.privacy.accounting import composed_epsilon
    from fedprofile.privacy.events import GaussianEvent, SkellamEvent, event_from_dict
    from fedprofile.privacy.secagg.noise import ORDERS, gaussian_rdp, rdp_epsilon

    gauss = [GaussianEvent(noise_multiplier=2.0, sensitivity=1.0, stage="kmeans", round=r,
                           component="sums") for r in range(3)]
    skellam = [SkellamEvent(**{k: getattr(e, k) for k in
                               ("noise_multiplier", "sensitivity", "stage", "round",
                                "component")}) for e in gauss]
    mu = math.sqrt(3) / 2.0
    assert composed_epsilon(gauss, 1e-6) == pytest.approx(gdp_epsilon(mu, 1e-6))
    mixed = composed_epsilon([*gauss[:2], skellam[2]], 1e-6)
    assert mixed == pytest.approx(rdp_epsilon(gaussian_rdp(ORDERS, mu), 1e-6))
    assert mixed > composed_epsilon(gauss, 1e-6)
    assert event_from_dict(skellam[0].to_dict()) == skellam[0]
    assert not GdpAccountant.supports(skellam[0])
