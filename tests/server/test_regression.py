"""Coordinator side of the response models: exactness at epsilon = inf, budget, penalty.

At epsilon = inf the federated ridge is scikit-learn's ``Ridge`` on the pooled training
rows, and the federated logistic regression is the centralized Böhning iteration of
:func:`fedprofile.sim.evaluate_response.bohning_logistic`, both to 1e-9.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from fedprofile.client.response import clipped_gradient_sum, gram_statistics
from fedprofile.contract.design import DesignData, design_data, design_norm_bound, target_bound
from fedprofile.contract.parser import load_spec, parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import ContractError
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.accounting import EPSILON_RTOL, GdpAccountant
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent
from fedprofile.privacy.mechanisms import GaussianMechanism
from fedprofile.protocol import (
    GradientReply,
    GradientRequest,
    GramReply,
    GramRequest,
    ResponseTask,
)
from fedprofile.server.regression import (
    LogisticStage,
    RidgeStage,
    dp_ridge_penalty,
    floor_noisy_gram,
    noise_ridge_penalty,
    plan_response,
    solve_ridge,
    symmetric_from_upper,
)
from fedprofile.sim.evaluate_response import bohning_logistic

DELTA = 1e-6
ALPHAS = [0.1, 1.0, 10.0]


# --- helpers ----------------------------------------------------------------------------------


def _bank_designs(target: str) -> tuple[FeatureSpec, list[DesignData]]:
    preset = load_preset("bank")
    spec = load_spec(preset.spec_path)
    designs = [design_data(p.frame, spec, target, segment_centers=None, holdout=0.2, seed=0)
               for p in preset.partitions(5)]
    return spec, designs


def _pooled(designs: list[DesignData]) -> tuple[np.ndarray, np.ndarray]:
    return (np.vstack([d.z_train for d in designs]),
            np.concatenate([d.y_train for d in designs]))


def _task(spec: FeatureSpec, stage: str, target: str) -> ResponseTask:
    return ResponseTask(run_id="run-test", spec_fingerprint=spec.fingerprint(), stage=stage,
                        round=0, target=target, holdout=0.2, holdout_seed=0,
                        segment_centers=np.zeros((0, spec.dim)))


def _sklearn_ridge(z: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Reference coefficients in the design layout (features..., intercept last)."""
    central = Ridge(alpha=alpha).fit(z[:, :-1], y)
    return np.r_[central.coef_, central.intercept_]


@pytest.fixture(scope="module")
def ridge_data() -> tuple[FeatureSpec, list[DesignData]]:
    return _bank_designs("balance")


@pytest.fixture(scope="module")
def logistic_data() -> tuple[FeatureSpec, list[DesignData]]:
    return _bank_designs("y")


# --- ridge exactness at epsilon = inf ---------------------------------------------------------


@pytest.mark.parametrize("alpha", ALPHAS, ids=[f"alpha={a:g}" for a in ALPHAS])
def test_summed_partner_statistics_solve_to_sklearn_ridge(ridge_data, alpha) -> None:
    # Prepare
    _, designs = ridge_data
    z, y = _pooled(designs)
    stats = [gram_statistics(d.z_train, d.y_train) for d in designs]
    gram = symmetric_from_upper(np.sum([u for u, _ in stats], axis=0), z.shape[1])
    xty = np.sum([v for _, v in stats], axis=0)

    # Execute
    coef = solve_ridge(gram, xty, alpha=alpha)

    # Assert
    np.testing.assert_allclose(coef, _sklearn_ridge(z, y, alpha), rtol=0, atol=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS, ids=[f"alpha={a:g}" for a in ALPHAS])
def test_ridge_stage_at_infinite_epsilon_equals_sklearn_ridge(ridge_data, alpha) -> None:
    # Prepare
    spec, designs = ridge_data
    z, y = _pooled(designs)
    bound = design_norm_bound(spec, "balance", segment_aware=False)
    plan = plan_response(task="ridge", epsilon=math.inf, delta=DELTA, norm_bound=bound,
                         target_bound=target_bound(spec, "balance"))
    stage = RidgeStage(plan=plan, task=_task(spec, "ridge", "balance"), dim=z.shape[1],
                       alpha=alpha)

    # Execute
    assert stage.rounds() == (0,)
    request = stage.configure(0)
    replies = []
    for d in designs:
        upper, xty = gram_statistics(d.z_train, d.y_train if request.with_target else None)
        replies.append(GramReply(gram_upper=upper, xty=xty, events=plan.events()))
    stage.aggregate(0, replies)
    result = stage.finalize()

    # Assert
    assert isinstance(request, GramRequest) and request.with_target
    assert request.gram_noise_multiplier == 0.0 and request.target_noise_multiplier == 0.0
    assert result.penalty == alpha
    np.testing.assert_allclose(result.coef, _sklearn_ridge(z, y, alpha), rtol=0, atol=1e-9)


@pytest.mark.parametrize("task", ["ridge", "logistic"])
def test_non_private_plan_records_only_non_private_events(task) -> None:
    # Execute
    plan = plan_response(task=task, epsilon=math.inf, delta=DELTA, norm_bound=2.5,
                         target_bound=0.5, rounds=3)

    # Assert
    assert plan.non_private
    assert plan.gram_z == 0.0 and plan.target_z == 0.0 and set(plan.gradient_z) <= {0.0}
    assert plan.events()
    assert all(isinstance(e, NonPrivateEvent) for e in plan.events())
    accountant = GdpAccountant(delta=DELTA)
    accountant.compose(*plan.events())
    assert math.isinf(accountant.get_epsilon())


def test_ridge_stage_refuses_to_finalize_before_its_round() -> None:
    # Prepare
    plan = plan_response(task="ridge", epsilon=1.0, delta=DELTA, norm_bound=2.0,
                         target_bound=0.5)
    spec = parse_spec({"features": {"x": {"kind": "numeric", "bounds": [0, 1]}}})
    stage = RidgeStage(plan=plan, task=_task(spec, "ridge", "t"), dim=2, alpha=1.0)

    # Execute / Assert
    with pytest.raises(ContractError, match="not aggregated"):
        stage.finalize()


# --- logistic exactness at epsilon = inf ------------------------------------------------------


@pytest.mark.parametrize(("alpha", "rounds"), [(1.0, 3), (10.0, 1), (0.1, 4)],
                         ids=["alpha=1-3-rounds", "alpha=10-1-round", "alpha=0.1-4-rounds"])
def test_logistic_stage_at_infinite_epsilon_equals_centralized_bohning(
        logistic_data, alpha, rounds) -> None:
    # Prepare: clip = 0 in the plan means the design norm bound, which clips nothing
    spec, designs = logistic_data
    z, y = _pooled(designs)
    bound = design_norm_bound(spec, "y", segment_aware=False)
    assert np.linalg.norm(z, axis=1).max() <= bound
    plan = plan_response(task="logistic", epsilon=math.inf, delta=DELTA, norm_bound=bound,
                         target_bound=target_bound(spec, "y"), rounds=rounds)
    stage = LogisticStage(plan=plan, task=_task(spec, "logistic", "y"), dim=z.shape[1],
                          alpha=alpha)

    # Execute: drive the stage round by round with exact partner replies
    for rnd in stage.rounds():
        request = stage.configure(rnd)
        if rnd == 0:
            assert isinstance(request, GramRequest) and not request.with_target
            replies = [GramReply(gram_upper=gram_statistics(d.z_train, None)[0],
                                 xty=np.zeros(0), events=()) for d in designs]
        else:
            assert isinstance(request, GradientRequest)
            assert request.clip >= bound and request.noise_multiplier == 0.0
            replies = [GradientReply(gradient=clipped_gradient_sum(d.z_train, d.y_train,
                                                                   request.theta, request.clip),
                                     events=()) for d in designs]
        stage.aggregate(rnd, replies)
    result = stage.finalize()

    # Assert
    assert stage.rounds() == tuple(range(rounds + 1))
    assert len(result.history) == rounds
    np.testing.assert_allclose(result.coef, bohning_logistic(z, y, alpha=alpha, rounds=rounds),
                               rtol=0, atol=1e-9)


def test_logistic_stage_refuses_a_gradient_round_before_the_gram_round() -> None:
    # Prepare
    plan = plan_response(task="logistic", epsilon=1.0, delta=DELTA, norm_bound=2.0,
                         target_bound=1.0, rounds=2)
    spec = parse_spec({"features": {"x": {"kind": "numeric", "bounds": [0, 1]}}})
    stage = LogisticStage(plan=plan, task=_task(spec, "logistic", "t"), dim=2, alpha=1.0)

    # Execute / Assert
    with pytest.raises(ContractError, match="before the Gram round"):
        stage.aggregate(1, [GradientReply(gradient=np.zeros(2), events=())])


# --- plan_response: the budget ----------------------------------------------------------------

EPSILONS = [0.1, 0.5, 1.0, 3.0, 8.0]
PLAN_CASES = [(task, eps, rounds) for task in ("ridge", "logistic") for eps in EPSILONS
              for rounds in (1, 5)]


@pytest.mark.parametrize(("task", "epsilon", "rounds"), PLAN_CASES,
                         ids=[f"{t}-eps={e:g}-{r}r" for t, e, r in PLAN_CASES])
def test_plan_events_compose_to_the_target_epsilon(task, epsilon, rounds) -> None:
    # Prepare
    plan = plan_response(task=task, epsilon=epsilon, delta=DELTA, norm_bound=2.6,
                         target_bound=0.5 if task == "ridge" else 1.0, rounds=rounds)
    accountant = GdpAccountant(delta=DELTA)

    # Execute
    accountant.compose(*plan.events())
    spent = accountant.get_epsilon()

    # Assert: exact up to the bisection, never above beyond the accountant's documented
    # slack, and a partner whose policy cap is the target accepts every release
    assert all(isinstance(e, GaussianEvent) for e in plan.events())
    assert abs(spent - epsilon) <= 1e-9
    assert spent <= epsilon * (1 + EPSILON_RTOL)
    assert accountant.mu == pytest.approx(plan.mu, rel=1e-12)
    GdpAccountant(delta=DELTA, max_epsilon=epsilon).compose(*plan.events())


def test_ridge_plan_has_a_gram_and_a_target_release_with_their_sensitivities() -> None:
    # Execute
    plan = plan_response(task="ridge", epsilon=1.0, delta=DELTA, norm_bound=3.0,
                         target_bound=0.5, rounds=7)

    # Assert: Z'Z has sensitivity B**2, Z'y B * |y|max; rounds are ignored by ridge
    events = plan.events()
    assert [(e.component, e.round, e.sensitivity) for e in events] == [
        ("gram", 0, 9.0), ("xty", 0, 1.5)]
    assert plan.gradient_z == ()
    # the Gram release gets 70 % of mu**2 (the default gram_share_ridge)
    assert (1 / plan.gram_z) ** 2 == pytest.approx(0.7 * plan.mu**2, rel=1e-12)
    assert (1 / plan.target_z) ** 2 == pytest.approx(0.3 * plan.mu**2, rel=1e-12)


def test_logistic_plan_splits_the_gradient_budget_equally_over_rounds() -> None:
    # Execute
    plan = plan_response(task="logistic", epsilon=2.0, delta=DELTA, norm_bound=3.0,
                         target_bound=1.0, rounds=4)

    # Assert
    events = plan.events()
    assert [(e.component, e.round) for e in events] == [
        ("gram", 0), ("gradient", 1), ("gradient", 2), ("gradient", 3), ("gradient", 4)]
    assert plan.clip == 3.0  # clip = 0 means the design norm bound
    assert all(e.sensitivity == 3.0 for e in events[1:])
    assert len(set(plan.gradient_z)) == 1
    assert (1 / plan.gram_z) ** 2 == pytest.approx(0.3 * plan.mu**2, rel=1e-12)


def test_logistic_plan_keeps_an_explicit_clip() -> None:
    # Execute
    plan = plan_response(task="logistic", epsilon=1.0, delta=DELTA, norm_bound=3.0,
                         target_bound=1.0, rounds=2, clip=0.5)

    # Assert
    assert plan.clip == 0.5
    assert [e.sensitivity for e in plan.events()] == [9.0, 0.5, 0.5]


@pytest.mark.parametrize("task", ["ridge", "logistic"])
def test_stage_requests_release_exactly_the_planned_events(task) -> None:
    # Prepare: the partner builds its mechanisms from the request as client/app.py does
    spec = parse_spec({"features": {"x": {"kind": "numeric", "bounds": [0, 1]}}})
    bound, tb = 1.5, (0.5 if task == "ridge" else 1.0)
    plan = plan_response(task=task, epsilon=1.0, delta=DELTA, norm_bound=bound,
                         target_bound=tb, rounds=3)
    stage_cls = RidgeStage if task == "ridge" else LogisticStage
    stage = stage_cls(plan=plan, task=_task(spec, task, "t"), dim=2, alpha=1.0)

    # Execute
    released = []
    for rnd in stage.rounds():
        request = stage.configure(rnd)
        if isinstance(request, GramRequest):
            where = {"stage": request.task.stage, "round": request.task.round}
            released.append(GaussianMechanism(
                sensitivity=bound**2, noise_multiplier=request.gram_noise_multiplier
            ).event(component="gram", **where))
            if request.with_target:
                released.append(GaussianMechanism(
                    sensitivity=bound * tb, noise_multiplier=request.target_noise_multiplier
                ).event(component="xty", **where))
            stage.aggregate(rnd, [GramReply(gram_upper=np.array([1.0, 0.0, 1.0]),
                                            xty=np.zeros(2), events=())])
        else:
            released.append(GaussianMechanism(
                sensitivity=request.clip, noise_multiplier=request.noise_multiplier
            ).event(component="gradient", stage=request.task.stage, round=request.task.round))
            stage.aggregate(rnd, [GradientReply(gradient=np.zeros(2), events=())])

    # Assert
    assert tuple(released) == plan.events()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"task": "lasso"}, "'task'"),
    ({"task": "ridge", "rounds": 0}, "'rounds'"),
    ({"task": "logistic", "rounds": 0}, "'rounds'"),
    ({"task": "logistic", "rounds": -2}, "'rounds'"),
    ({"task": "ridge", "epsilon": 0.0}, "'epsilon'"),
    ({"task": "logistic", "epsilon": -1.0}, "'epsilon'"),
], ids=["unknown-task", "ridge-0-rounds", "logistic-0-rounds", "negative-rounds",
        "zero-epsilon", "negative-epsilon"])
def test_plan_response_rejects_bad_parameters(kwargs, match) -> None:
    # Prepare
    args = {"epsilon": 1.0, "delta": DELTA, "norm_bound": 2.0, "target_bound": 0.5, **kwargs}

    # Execute / Assert
    with pytest.raises(ContractError, match=match):
        plan_response(**args)


# --- dp_ridge_penalty -------------------------------------------------------------------------


def test_dp_ridge_penalty_is_zero_without_noise() -> None:
    # Prepare: even a singular, indefinite matrix gets no extra penalty when sigma is 0
    gram = np.array([[1.0, 2.0], [2.0, 1.0]])

    # Execute / Assert
    assert dp_ridge_penalty(gram, 0.0) == 0.0


def test_dp_ridge_penalty_is_zero_for_a_well_conditioned_matrix() -> None:
    # lambda_min = 1000 is above sigma * sqrt(D) = 2 * sqrt(3)
    assert dp_ridge_penalty(1000.0 * np.eye(3), 2.0) == 0.0


@pytest.mark.parametrize(("sigma", "seed"), [(0.5, 0), (3.0, 1), (50.0, 2)],
                         ids=["small-noise", "medium-noise", "large-noise"])
def test_dp_ridge_penalty_lifts_the_noisy_spectrum_to_sigma_sqrt_d(sigma, seed) -> None:
    # Prepare: a rank-deficient Gram matrix plus symmetric Gaussian noise
    rng = np.random.default_rng(seed)
    dim = 8
    z = rng.normal(size=(5, dim))
    upper = gram_statistics(z, None)[0] + rng.normal(0.0, sigma, size=dim * (dim + 1) // 2)
    noisy = symmetric_from_upper(upper, dim)

    # Execute
    penalty = dp_ridge_penalty(noisy, sigma)

    # Assert
    lifted = float(np.linalg.eigvalsh(noisy + penalty * np.eye(dim))[0])
    assert penalty > 0.0
    assert lifted >= sigma * math.sqrt(dim) - 1e-9 * max(1.0, penalty)
    assert lifted == pytest.approx(sigma * math.sqrt(dim), rel=1e-9)


# --- ridge post-processing: eigenvalue floor and noise penalty --------------------------------


def test_floor_noisy_gram_is_the_identity_without_noise() -> None:
    # Prepare: an exact (rank-deficient) Gram matrix, as at epsilon = inf
    z = np.random.default_rng(0).normal(size=(3, 5))
    gram = z.T @ z

    # Execute / Assert: the very same array, not a reconstruction of it
    assert floor_noisy_gram(gram, 0.0) is gram


@pytest.mark.parametrize(("sigma", "seed"), [(0.5, 0), (3.0, 1), (50.0, 2)],
                         ids=["small-noise", "medium-noise", "large-noise"])
def test_floor_noisy_gram_raises_only_the_eigenvalues_below_sigma_sqrt_d(sigma, seed) -> None:
    # Prepare: a rank-deficient Gram matrix plus symmetric Gaussian noise
    rng = np.random.default_rng(seed)
    dim = 8
    z = rng.normal(size=(40, dim)) * np.r_[np.full(4, 10.0), np.full(4, 0.01)]
    upper = gram_statistics(z, None)[0] + rng.normal(0.0, sigma, size=dim * (dim + 1) // 2)
    noisy = symmetric_from_upper(upper, dim)
    floor = sigma * math.sqrt(dim)

    # Execute
    floored = floor_noisy_gram(noisy, sigma)

    # Assert: symmetric, spectrum max(lambda, floor), eigenvectors kept
    before, vectors = np.linalg.eigh(noisy)
    np.testing.assert_allclose(floored, floored.T, atol=1e-9)
    np.testing.assert_allclose(np.linalg.eigvalsh(floored), np.sort(np.maximum(before, floor)),
                               rtol=1e-9, atol=1e-9 * floor)
    np.testing.assert_allclose(floored @ vectors, vectors * np.maximum(before, floor),
                               atol=1e-7 * max(1.0, float(np.abs(noisy).max())))


def test_noise_ridge_penalty_depends_only_on_the_public_noise_and_dimension() -> None:
    # Execute / Assert: no data argument at all; zero without noise
    assert noise_ridge_penalty(0.0, 41) == 0.0
    assert noise_ridge_penalty(2.0, 16) == pytest.approx(0.5 * 2.0 * 4.0)
    assert noise_ridge_penalty(4.0, 16) == pytest.approx(2 * noise_ridge_penalty(2.0, 16))


def test_ridge_stage_solves_the_floored_gram_with_the_noise_penalty() -> None:
    # Prepare: one noisy reply; the plan's sigma is gram_z * B**2 for a single (secure) sum
    plan = plan_response(task="ridge", epsilon=1.0, delta=DELTA, norm_bound=2.0,
                         target_bound=0.5)
    spec = parse_spec({"features": {"x": {"kind": "numeric", "bounds": [0, 1]}}})
    stage = RidgeStage(plan=plan, task=_task(spec, "ridge", "t"), dim=2, alpha=1.0)
    upper, xty = np.array([30.0, -4.0, 50.0]), np.array([3.0, 5.0])
    sigma = plan.gram_z * 4.0

    # Execute
    stage.aggregate(0, [GramReply(gram_upper=upper, xty=xty, events=())])
    result = stage.finalize()

    # Assert
    gram = floor_noisy_gram(symmetric_from_upper(upper, 2), sigma)
    expected = solve_ridge(gram, xty, alpha=1.0, extra=noise_ridge_penalty(sigma, 2))
    np.testing.assert_allclose(result.coef, expected, rtol=1e-12)
    assert result.penalty == pytest.approx(1.0 + noise_ridge_penalty(sigma, 2))
    assert result.gram_noise_sd == pytest.approx(sigma)


def test_symmetric_from_upper_inverts_the_row_major_upper_triangle() -> None:
    # Execute
    matrix = symmetric_from_upper(np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), 3)

    # Assert
    np.testing.assert_array_equal(matrix, [[1, 2, 3], [2, 4, 5], [3, 5, 6]])
