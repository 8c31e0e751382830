"""Tests for the partner's enforcement: plans bound to releases, atomic check-and-record."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedprofile.errors import PolicyRefusedError
from fedprofile.privacy.accounting import gdp_epsilon, gdp_mu
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent, PrivacyEvent
from fedprofile.privacy.ledger import Ledger
from fedprofile.privacy.policy import SIMULATION_POLICY, PartnerGuard, PartnerPolicy, epsilon_left
from fedprofile.server.kmeans import plan_kmeans
from fedprofile.server.regression import plan_response

DELTA = 1e-6


def _design_policy(**changes: object) -> PartnerPolicy:
    values = {
        "max_epsilon_per_run": 1.0,
        "total_epsilon": 4.0,
        "delta": DELTA,
        "min_segment_size": 50,
        "allowed_stages": ("profile", "kmeans"),
        "allow_non_private": False,
    } | changes
    return PartnerPolicy(**values)  # type: ignore[arg-type]


def _plan_events(epsilon: float) -> tuple[PrivacyEvent, ...]:
    return plan_kmeans(epsilon=epsilon, delta=DELTA, lloyd_rounds=3, norm_bound=2.0).events()


def _oracle_mu(epsilon: float, delta: float) -> float:
    def excess(mu: float) -> float:
        return (
            float(
                norm.cdf(-epsilon / mu + mu / 2)
                - math.exp(epsilon) * norm.cdf(-epsilon / mu - mu / 2)
            )
            - delta
        )

    return float(brentq(excess, 1e-6, 50.0, xtol=1e-15, rtol=1e-15))


def _run(guard: PartnerGuard, run_id: str, events: tuple[PrivacyEvent, ...]) -> None:
    """Announce a k-means run, then make each of its releases."""
    guard.accept_plan(
        run_id=run_id, stages=("kmeans",), events=events, delta=DELTA, min_segment_size=50
    )
    for event in events:
        guard.authorize(run_id=run_id, stage="kmeans", events=[event])


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(":memory:")


# --- the announced plan ------------------------------------------------------------------------


def test_a_plan_within_the_policy_is_stored_and_nothing_is_recorded(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")

    # Execute
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=_plan_events(1.0), delta=DELTA, min_segment_size=50
    )

    # Assert
    assert ledger.events() == []
    assert ledger.notes() == []
    assert ledger.plan(run_id="r1", party="acme").events == _plan_events(1.0)


@pytest.mark.parametrize(
    ("policy", "stages", "events", "delta", "min_size", "fragment"),
    [
        (
            {"max_epsilon_per_run": 0.5},
            ("kmeans",),
            1.0,
            DELTA,
            50,
            r"epsilon = 1 of its data, above its limit of 0\.5 per run",
        ),
        ({}, ("ridge",), 1.0, DELTA, 50, "stage 'ridge' is not in its allowed stages"),
        ({}, ("kmeans",), 1.0, 1e-5, 50, r"delta 1e-05 is larger than its policy's delta 1e-06"),
        ({}, ("kmeans",), math.inf, DELTA, 50, "non-private"),
        ({}, ("kmeans",), 1.0, DELTA, 10, "segments of 10 customers; its policy's minimum is 50"),
        ({}, ("kmeans", "teleport"), 1.0, DELTA, 50, "unknown stage"),
        (
            {"allowed_stages": ("profile", "kmeans", "ridge")},
            ("ridge",),
            1.0,
            DELTA,
            50,
            "belongs to no announced stage",
        ),
    ],
    ids=[
        "per-run",
        "stage",
        "delta",
        "non-private",
        "min-segment",
        "unknown-stage",
        "release-outside-stages",
    ],
)
def test_a_plan_breaking_the_policy_is_refused_noted_and_not_stored(
    ledger: Ledger,
    policy: dict,
    stages: tuple[str, ...],
    events: float,
    delta: float,
    min_size: int,
    fragment: str,
) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(**policy), ledger, "acme")

    # Execute
    with pytest.raises(PolicyRefusedError, match=fragment) as info:
        guard.accept_plan(
            run_id="r9",
            stages=stages,
            events=_plan_events(events),
            delta=delta,
            min_segment_size=min_size,
        )

    # Assert: no partner name (the coordinator knows who answered; equal refusals group)
    assert str(info.value).startswith("Policy refusal: ") and "acme" not in str(info.value)
    assert [n["kind"] for n in ledger.notes(run_id="r9")] == ["refusal"]
    assert ledger.plan(run_id="r9", party="acme") is None
    assert ledger.events() == []


def test_a_run_id_cannot_be_announced_again_with_another_plan(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=_plan_events(0.5), delta=DELTA, min_segment_size=50
    )

    # Execute / Assert: the same plan again is fine (a retry), another one is not
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=_plan_events(0.5), delta=DELTA, min_segment_size=50
    )
    with pytest.raises(PolicyRefusedError, match="announced before with another plan"):
        guard.accept_plan(
            run_id="r1",
            stages=("kmeans",),
            events=_plan_events(1.0),
            delta=DELTA,
            min_segment_size=50,
        )


# --- releases bound to the plan ------------------------------------------------------------


def test_a_planned_release_is_recorded_once_and_never_again(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(_design_policy(), ledger, "acme")
    events = _plan_events(1.0)
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=events, delta=DELTA, min_segment_size=50
    )

    # Execute
    guard.authorize(run_id="r1", stage="kmeans", events=events[:2])

    # Assert: a replay of the same round (same or other centres) is refused
    assert ledger.events(run_id="r1") == list(events[:2])
    with pytest.raises(
        PolicyRefusedError, match="not in the run's announced plan, or was already made"
    ):
        guard.authorize(run_id="r1", stage="kmeans", events=events[:2])
    assert ledger.events(run_id="r1") == list(events[:2])


def test_a_plan_listing_a_release_twice_is_refused(ledger: Ledger) -> None:
    """Two releases alike could be asked for with requests that differ only outside their
    noise seed (a simulation's), and their difference would cancel the noise."""
    guard = PartnerGuard(SIMULATION_POLICY, ledger, "acme")
    events = _plan_events(1.0)
    with pytest.raises(PolicyRefusedError, match=r"lists the release .* twice"):
        guard.accept_plan(run_id="r1", stages=("kmeans",), events=(*events, events[0]),
                          delta=DELTA, min_segment_size=50)
    assert ledger.plan(run_id="r1", party="acme") is None


def test_a_release_of_an_unannounced_run_is_refused(ledger: Ledger) -> None:
    guard = PartnerGuard(SIMULATION_POLICY, ledger, "acme")
    with pytest.raises(PolicyRefusedError, match="never announced"):
        guard.authorize(run_id="r1", stage="kmeans", events=_plan_events(1.0)[:2])
    assert ledger.events() == []


def test_a_release_with_other_noise_than_planned_is_refused(ledger: Ledger) -> None:
    # Prepare
    guard = PartnerGuard(SIMULATION_POLICY, ledger, "acme")
    events = _plan_events(1.0)
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=events, delta=DELTA, min_segment_size=50
    )
    weaker = GaussianEvent(
        noise_multiplier=events[0].noise_multiplier / 2,
        sensitivity=events[0].sensitivity,
        stage=events[0].stage,
        round=events[0].round,
        component=events[0].component,
    )

    # Execute / Assert
    with pytest.raises(PolicyRefusedError, match="not in the run's announced plan"):
        guard.authorize(run_id="r1", stage="kmeans", events=[weaker])


@pytest.mark.parametrize(("scale", "accepted"), [(0.25, True), (1.0, True), (1.5, False)])
def test_a_release_may_clip_tighter_than_planned_but_never_looser(ledger: Ledger, scale: float,
                                                                  accepted: bool) -> None:
    """Same multiplier, smaller sensitivity: the noise shrinks with it, the loss does not."""
    # Prepare
    guard = PartnerGuard(SIMULATION_POLICY, ledger, "acme")
    events = _plan_events(1.0)
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=events, delta=DELTA, min_segment_size=50
    )
    lloyd_sums = events[2]
    assert (lloyd_sums.stage, lloyd_sums.component) == ("kmeans", "sums")
    release = GaussianEvent(
        noise_multiplier=lloyd_sums.noise_multiplier,
        sensitivity=lloyd_sums.sensitivity * scale,
        stage=lloyd_sums.stage,
        round=lloyd_sums.round,
        component=lloyd_sums.component,
    )

    # Execute / Assert
    if accepted:
        guard.authorize(run_id="r1", stage="kmeans", events=[release])
        assert ledger.events(run_id="r1", party="acme") == [release]
    else:
        with pytest.raises(PolicyRefusedError, match="not in the run's announced plan"):
            guard.authorize(run_id="r1", stage="kmeans", events=[release])


def test_a_ridge_release_labelled_kmeans_is_charged_to_ridge_and_refused(ledger: Ledger) -> None:
    # Prepare: the policy allows only k-means; the coordinator labels a Gram release 'kmeans'
    guard = PartnerGuard(_design_policy(), ledger, "acme")
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=_plan_events(1.0), delta=DELTA, min_segment_size=50
    )
    ridge = plan_response(
        task="ridge", epsilon=1.0, delta=DELTA, norm_bound=2.0, target_bound=0.5
    ).events()

    # Execute / Assert: the partner charges what it computes (a Gram matrix: ridge)
    with pytest.raises(PolicyRefusedError, match="stage 'ridge' is not in its allowed"):
        guard.authorize(run_id="r1", stage="ridge", events=ridge[:1])
    relabelled = GaussianEvent(
        noise_multiplier=ridge[0].noise_multiplier,
        sensitivity=ridge[0].sensitivity,
        stage="kmeans",
        round=1,
        component="gram",
    )
    with pytest.raises(PolicyRefusedError):
        guard.authorize(run_id="r1", stage="ridge", events=[relabelled])
    assert ledger.events() == []


def test_a_stage_outside_the_announced_stages_is_refused(ledger: Ledger) -> None:
    guard = PartnerGuard(SIMULATION_POLICY, ledger, "acme")
    guard.accept_plan(
        run_id="r1", stages=("kmeans",), events=_plan_events(1.0), delta=DELTA, min_segment_size=50
    )
    with pytest.raises(PolicyRefusedError, match="not among the stages announced for run 'r1'"):
        guard.check_announced(run_id="r1", stage="score")


# --- budgets -----------------------------------------------------------------------------------


def test_runs_are_accepted_until_the_total_budget_is_reached(ledger: Ledger) -> None:
    # Prepare: runs of epsilon 1 are mu1-GDP each; n runs compose to sqrt(n) * mu1, so the
    # lifetime budget epsilon 4 (mu4-GDP) admits floor((mu4 / mu1)**2) runs (= 12).
    guard = PartnerGuard(_design_policy(), ledger, "acme")
    expected_runs = math.floor((_oracle_mu(4.0, DELTA) / _oracle_mu(1.0, DELTA)) ** 2)
    accepted = 0

    # Execute
    with pytest.raises(PolicyRefusedError, match="total budget of 4") as info:
        for run in range(100):
            _run(guard, f"run-{run}", _plan_events(1.0))
            accepted += 1

    # Assert
    assert expected_runs == 12
    assert accepted == expected_runs
    lifetime = ledger.spend(party="acme", delta=DELTA)
    assert lifetime.releases == 8 * expected_runs
    assert lifetime.epsilon <= 4.0
    assert f"a next run may spend at most epsilon = {guard.remaining():.4g}" in str(info.value)
    assert ledger.events(run_id=f"run-{expected_runs}") == []


def test_budget_left_is_the_largest_next_run_in_gdp_units_not_a_subtraction(ledger: Ledger) -> None:
    # Prepare: three epsilon-1 runs under a lifetime budget of 2 (they compose in mu)
    guard = PartnerGuard(_design_policy(total_epsilon=2.0), ledger, "acme")
    for run in range(3):
        _run(guard, f"run-{run}", _plan_events(1.0))
    spent = ledger.spend(party="acme", delta=DELTA).epsilon

    # Execute
    left = guard.remaining()

    # Assert: far more than 2 - spent, and exactly what still fits
    mu_left = math.sqrt(gdp_mu(2.0, DELTA) ** 2 - 3 * gdp_mu(1.0, DELTA) ** 2)
    assert left == pytest.approx(gdp_epsilon(mu_left, DELTA), rel=1e-9)
    assert left > 0.7 > 2.0 - spent
    _run(guard, "fits", _plan_events(left * (1 - 1e-6)))
    with pytest.raises(PolicyRefusedError, match="total budget of 2"):
        guard.accept_plan(
            run_id="too-big",
            stages=("kmeans",),
            events=_plan_events(0.01),
            delta=DELTA,
            min_segment_size=50,
        )


def test_budget_left_after_a_non_private_run_is_never_nan() -> None:
    # A simulation's inf run, then: unlimited policy -> inf, finite budget -> 0
    spent = [NonPrivateEvent(sensitivity=1.0, stage="kmeans", round=1, component="sums")]
    assert epsilon_left(SIMULATION_POLICY, spent) == math.inf
    assert (
        epsilon_left(
            PartnerPolicy(max_epsilon_per_run=math.inf, total_epsilon=3.0, allow_non_private=True),
            spent,
        )
        == 0.0
    )
    assert epsilon_left(PartnerPolicy(), []) == 1.0


# --- atomic check and record across processes --------------------------------------------------


def _contend(path: str, run_id: str, barrier: object, results: object) -> None:
    guard = PartnerGuard(
        _design_policy(max_epsilon_per_run=1.0, total_epsilon=1.6), Ledger(path), "acme"
    )
    events = _plan_events(1.0)
    barrier.wait()  # type: ignore[attr-defined]
    try:
        guard.accept_plan(
            run_id=run_id, stages=("kmeans",), events=events, delta=DELTA, min_segment_size=50
        )
        guard.authorize(run_id=run_id, stage="kmeans", events=events)
        results.put(("accepted", run_id))  # type: ignore[attr-defined]
    except PolicyRefusedError:
        results.put(("refused", run_id))  # type: ignore[attr-defined]


def _race(path: Path, run_ids: list[str]) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(len(run_ids)), ctx.Queue()
    procs = [
        ctx.Process(target=_contend, args=(str(path), rid, barrier, results)) for rid in run_ids
    ]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return [rid for verdict, rid in outcomes if verdict == "accepted"]


def test_concurrent_processes_cannot_together_exceed_the_lifetime_budget(tmp_path: Path) -> None:
    # Prepare: a lifetime budget of 1.6 fits exactly two epsilon-1 runs
    path = tmp_path / "ledger.sqlite"
    fits = math.floor((gdp_mu(1.6, DELTA) / gdp_mu(1.0, DELTA)) ** 2)

    # Execute: 12 processes announce and run 12 runs at once
    accepted = _race(path, [f"run-{i}" for i in range(12)])

    # Assert
    assert fits == 2
    assert len(accepted) == fits
    with Ledger(path) as book:
        assert book.spend(party="acme", delta=DELTA).epsilon <= 1.6 * (1 + 1e-9)


def test_concurrent_processes_cannot_release_one_planned_round_twice(tmp_path: Path) -> None:
    # Execute: 12 processes try the same run's whole plan at once
    path = tmp_path / "ledger.sqlite"
    accepted = _race(path, ["same-run"] * 12)

    # Assert
    assert accepted == ["same-run"]
    with Ledger(path) as book:
        assert len(book.events(run_id="same-run")) == len(_plan_events(1.0))
