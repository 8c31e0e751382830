"""The refining round: the first Lloyd round runs with more cells than segments."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.cluster import KMeans

from fedprofile.client.statistics import cluster_partials
from fedprofile.contract.spec import FeatureSpec, NumericFeature
from fedprofile.protocol import KMeansReply
from fedprofile.server.kmeans import REFINE_FACTOR, KMeansStage, plan_kmeans
from fedprofile.server.lloyd import weighted_recluster
from fedprofile.sim.evaluate import kmeans_cost


def _spec() -> FeatureSpec:
    return FeatureSpec(name="blobs", features=(NumericFeature(name="a", bounds=(0.0, 1.0)),
                                               NumericFeature(name="b", bounds=(0.0, 1.0))))


def _blobs(seed: int, n: int = 2000) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    lo, hi = _spec().box()
    middles = lo + (hi - lo) * np.array([[0.2, 0.2], [0.8, 0.3], [0.5, 0.8], [0.25, 0.7]])
    points = np.vstack([m + rng.normal(scale=0.05, size=(n, 2)) for m in middles])
    return np.array_split(np.clip(points, lo, hi)[rng.permutation(len(points))], 3)


def _stage(epsilon: float, *, k: int = 4, rounds: int = 3, **plan_options: float) -> KMeansStage:
    spec = _spec()
    plan = plan_kmeans(epsilon=epsilon, delta=1e-6, lloyd_rounds=rounds,
                       norm_bound=spec.norm_bound, **plan_options)
    return KMeansStage(spec=spec, plan=plan, k=k, n_partners=3, run_id="r" * 16,
                       fingerprint=spec.fingerprint(), candidates=60, seed=0)


def _run(stage: KMeansStage, matrices: list[np.ndarray]) -> list[int]:
    """Run every round on exact partner sums (no noise drawn); return the centres sent."""
    sent = []
    for rnd in stage.rounds():
        request = stage.configure(rnd)
        sent.append(len(request.centers))
        replies = []
        for matrix in matrices:
            sums, counts = cluster_partials(matrix, request.centers, request.radius)
            replies.append(KMeansReply(sums=sums, counts=counts, events=()))
        stage.aggregate(rnd, replies)
    return sent


def test_only_the_first_lloyd_round_after_an_overclustering_start_refines() -> None:
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=1.0)
    assert [r.refine_factor for r in plan.rounds] == [1.0, REFINE_FACTOR, 1.0, 1.0]
    # no summary to refine, or no round after it to settle the centres
    assert not any(r.refine for r in plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3,
                                                 norm_bound=1.0, init="random").rounds)
    assert not any(r.refine for r in plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=1,
                                                 norm_bound=1.0).rounds)
    assert not any(r.refine for r in plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3,
                                                 norm_bound=1.0, refine_factor=1.0).rounds)


def test_refining_costs_no_budget() -> None:
    refined = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=4, norm_bound=2.0)
    plain = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=4, norm_bound=2.0,
                        refine_factor=1.0)
    assert refined.events() == plain.events()


@pytest.mark.parametrize("epsilon", [math.inf, 4.0])
def test_the_refining_round_sends_cells_and_keeps_k_centres(epsilon: float) -> None:
    stage, matrices = _stage(epsilon), _blobs(1)
    sent = _run(stage, matrices)
    # the start's 60 candidates, then up to 3 k cells, then the k centres
    assert sent[0] == 60
    assert 4 < sent[1] <= REFINE_FACTOR * 4
    assert sent[2:] == [4, 4]
    refining = stage.history[1]
    assert refining["refined_cells"] == sent[1]
    assert refining["sizes_noisy"] == []
    assert all(len(h["centers_scaled"]) == 4 for h in stage.history)
    result = stage.finalize()
    assert result.centers.shape == (4, 2) and len(result.sizes) == 4


def test_refining_finds_the_segments_without_noise() -> None:
    matrices = _blobs(2)
    pooled = np.vstack(matrices)
    stage = _stage(math.inf)
    _run(stage, matrices)
    lo, hi = _spec().box()
    truth = lo + (hi - lo) * np.array([[0.2, 0.2], [0.8, 0.3], [0.5, 0.8], [0.25, 0.7]])
    assert kmeans_cost(pooled, stage.centers) <= 1.001 * kmeans_cost(pooled, truth)


def test_too_few_clear_cells_keep_the_k_largest() -> None:
    stage, matrices = _stage(1.0), _blobs(3)
    init = stage.rounds()[0]
    request = stage.configure(init)
    replies = [KMeansReply(*cluster_partials(m, request.centers, 0.0), events=())
               for m in matrices]
    stage.aggregate(init, replies)
    refining = stage.rounds()[1]
    cells = stage.configure(refining).centers
    # only two cells clear twice the count noise: the four largest become the centres
    counts = np.zeros(len(cells))
    counts[: 4] = [1e6, 1e6, 1.0, 0.5]
    stage.aggregate(refining, [KMeansReply(sums=np.zeros_like(cells), counts=counts,
                                           events=())])
    np.testing.assert_allclose(np.sort(stage.centers, axis=0),
                               np.sort(cells[:4], axis=0))


def test_a_start_with_no_more_candidates_than_segments_does_not_refine() -> None:
    stage = _stage(math.inf, k=4)
    init = stage.rounds()[0]
    request = stage.configure(init)
    # every customer sits on one of four candidates: the start keeps four means
    points = request.centers[:4].repeat(50, axis=0)
    stage.aggregate(init, [KMeansReply(*cluster_partials(points, request.centers, 0.0),
                                       events=())])
    assert len(stage.configure(stage.rounds()[1]).centers) == 4


def _inertia(points: np.ndarray, weights: np.ndarray, centers: np.ndarray) -> float:
    return float(np.sum(weights * ((points[:, None] - centers[None]) ** 2).sum(2).min(1)))


def test_a_start_competes_with_the_restarts_of_the_reclustering() -> None:
    # Prepare: weighted cells where 50 seeded k-means++ restarts miss the best optimum
    rng = np.random.default_rng(30)
    middles = rng.uniform(-1, 1, size=(6, 3))
    points = np.vstack([m + rng.normal(scale=0.3, size=(3, 3)) for m in middles])
    weights = rng.lognormal(0, 1.0, size=18) * 1000
    best = KMeans(n_clusters=6, n_init=1000, random_state=1).fit(points, sample_weight=weights)
    # Execute
    restarts = weighted_recluster(points, weights, 6, seed=0)
    with_start = weighted_recluster(points, weights, 6, seed=0, start=best.cluster_centers_)
    # Assert: the start's optimum wins where the restarts alone fall short
    assert _inertia(points, weights, restarts) > 1.01 * best.inertia_
    assert _inertia(points, weights, with_start) == pytest.approx(best.inertia_, rel=1e-9)
