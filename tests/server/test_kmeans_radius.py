"""Lloyd rounds that release displacement sums clipped to a radius chosen from the start."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedprofile.client.statistics import cluster_partials
from fedprofile.contract.assignment import assign
from fedprofile.contract.spec import FeatureSpec, NumericFeature
from fedprofile.protocol import KMeansReply
from fedprofile.server.kmeans import (
    INIT_STAGE,
    RADIUS_FLOOR,
    RADIUS_SCALE,
    KMeansStage,
    plan_kmeans,
)
from fedprofile.server.lloyd import update_centers
from fedprofile.sim.inprocess import run_kmeans_inprocess

BOX = (np.full(2, -10.0), np.full(2, 10.0))


def test_displacements_by_hand() -> None:
    points = np.array([[0.0, 0.0], [3.0, 4.0], [10.0, 0.0], [0.5, 0.0]])
    centers = np.array([[0.0, 0.0], [10.0, 1.0]])
    sums, counts = cluster_partials(points, centers, radius=2.0)
    # (3, 4) is 5 from centre 0: shortened to (1.2, 1.6); (10, 0) is 1 from centre 1: kept
    np.testing.assert_allclose(sums, [[1.2 + 0.5, 1.6], [0.0, -1.0]])
    np.testing.assert_array_equal(counts, [3, 1])


def test_an_unclipped_displacement_step_is_lloyds_step() -> None:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(500, 3))
    centers = rng.normal(size=(4, 3))
    exact, counts = cluster_partials(points, centers)
    moved, same = cluster_partials(points, centers, radius=100.0)
    np.testing.assert_array_equal(counts, same)
    box = (np.full(3, -50.0), np.full(3, 50.0))
    np.testing.assert_allclose(
        update_centers(centers, moved, counts, min_count=0.5, box=box, displacement=True),
        update_centers(centers, exact, counts, min_count=0.5, box=box), atol=1e-12)


@pytest.mark.parametrize("radius", [0.3, 1.0, 4.0])
def test_one_customer_moves_one_row_of_the_sums_by_at_most_the_radius(radius: float) -> None:
    rng = np.random.default_rng(1)
    points = rng.uniform(-5, 5, size=(200, 2))
    centers = rng.uniform(-5, 5, size=(5, 2))
    with_all, _ = cluster_partials(points, centers, radius)
    for i in range(0, 200, 7):
        without, _ = cluster_partials(np.delete(points, i, axis=0), centers, radius)
        change = np.linalg.norm(with_all - without, axis=1)
        assert np.count_nonzero(change > 1e-12) <= 1
        assert change.max() <= radius + 1e-12


def _spec() -> FeatureSpec:
    return FeatureSpec(name="blobs", features=(NumericFeature(name="a", bounds=(0.0, 1.0)),
                                               NumericFeature(name="b", bounds=(0.0, 1.0))))


def _blobs(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    spec = _spec()
    lo, hi = spec.box()
    middles = lo + (hi - lo) * np.array([[0.2, 0.2], [0.8, 0.3], [0.5, 0.8]])
    points = np.vstack([m + rng.normal(scale=0.03, size=(3000, 2)) for m in middles])
    return np.array_split(np.clip(points, lo, hi)[rng.permutation(len(points))], 3)


def test_the_radius_comes_from_the_start_and_private_rounds_use_it() -> None:
    spec, matrices = _spec(), _blobs(0)
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=spec.norm_bound)
    assert [r.relative for r in plan.rounds] == [False, True, True, True]
    # the announced sums have the contract's bound: a round's radius may only be smaller
    assert {e.sensitivity for e in plan.events() if e.component == "sums"} == {spec.norm_bound}
    stage = KMeansStage(spec=spec, plan=plan, k=3, n_partners=3, run_id="r", fingerprint="f",
                        candidates=40, seed=0)
    rng = np.random.default_rng(0)
    radii = []
    for rnd in stage.rounds():
        request = stage.configure(rnd)
        radii.append(request.radius)
        sensitivity = request.radius or spec.norm_bound
        replies = []
        for matrix in matrices:
            sums, counts = cluster_partials(matrix, request.centers, request.radius)
            replies.append(KMeansReply(
                sums=sums + rng.normal(scale=rnd.sum_noise_multiplier * sensitivity,
                                       size=sums.shape),
                counts=counts + rng.normal(scale=rnd.count_noise_multiplier, size=counts.shape),
                events=()))
        stage.aggregate(rnd, replies)
    assert radii[0] == 0.0  # the start releases sums of vectors
    assert len(set(radii[1:])) == 1 and 0.0 < radii[1] < spec.norm_bound
    # RADIUS_SCALE times the spread of the start's candidate means (which underestimates the
    # blobs' own RMS radius, 0.03 * sqrt(2) of the box's width), at least RADIUS_FLOOR * B
    width = float(spec.box()[1][0] - spec.box()[0][0])
    assert RADIUS_FLOOR * spec.norm_bound <= radii[1] <= RADIUS_SCALE * 0.042 * width * 1.5
    assert [h["clip_radius"] for h in stage.history] == radii
    found = stage.finalize().centers
    assert np.all(np.bincount(assign(np.vstack(matrices), found), minlength=3) > 2500)


def test_without_a_private_start_the_rounds_release_sums_of_vectors_or_a_given_radius() -> None:
    spec, matrices = _spec(), _blobs(1)
    start = np.vstack([m[:1] for m in matrices])
    result = run_kmeans_inprocess(matrices, spec, k=3, epsilon=1.0, rounds=3, init="random",
                                  seed=0, noise_seed=0, initial_centers=start)
    assert [h["clip_radius"] for h in result.history] == [0.0, 0.0, 0.0]
    # a refresh takes the radius its published model was trained with
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=2, norm_bound=spec.norm_bound,
                       init="random")
    stage = KMeansStage(spec=spec, plan=plan, k=3, n_partners=3, run_id="r", fingerprint="f",
                        candidates=3, seed=0, initial_centers=start, initial_radius=0.05)
    assert [stage.configure(r).radius for r in stage.rounds()] == [0.05, 0.05]


def test_at_epsilon_infinity_the_rounds_are_exact() -> None:
    spec, matrices = _spec(), _blobs(2)
    plan = plan_kmeans(epsilon=math.inf, delta=1e-6, lloyd_rounds=3,
                       norm_bound=spec.norm_bound)
    assert not any(r.relative for r in plan.rounds)
    result = run_kmeans_inprocess(matrices, spec, k=3, epsilon=math.inf, rounds=3, seed=0)
    assert all(h["clip_radius"] == 0.0 for h in result.history if h["stage"] != INIT_STAGE)
