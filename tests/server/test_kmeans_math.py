"""Tests for the pure k-means maths: centre update, candidates, and local partial sums."""

from __future__ import annotations

import numpy as np
import pytest

import fedprofile.client.statistics as statistics
from fedprofile.client.statistics import cluster_partials
from fedprofile.contract.assignment import assign
from fedprofile.contract.spec import CategoricalFeature, FeatureSpec, NumericFeature
from fedprofile.server.kmeans import candidate_centers
from fedprofile.server.lloyd import update_centers

BOX = (np.array([-2.0, -2.0]), np.array([2.0, 2.0]))
WIDE_BOX = (np.array([-10.0, -10.0]), np.array([10.0, 10.0]))


def _previous() -> np.ndarray:
    return np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, -1.0]])


def _sums() -> np.ndarray:
    return np.array([[4.0, 2.0], [0.5, 0.5], [9.0, -3.0]])


def _naive_partials(matrix: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: squared distances centre by centre, then sums and counts cluster by cluster."""
    dist = np.stack([((matrix - c) ** 2).sum(axis=1) for c in centers], axis=1)
    labels = dist.argmin(axis=1)
    sums = np.zeros_like(centers, dtype=float)
    counts = np.zeros(len(centers))
    for j in range(len(centers)):
        members = matrix[labels == j]
        sums[j] = members.sum(axis=0)
        counts[j] = len(members)
    return sums, counts


# --- update_centers --------------------------------------------------------------------------


@pytest.mark.parametrize("small_count", [0.5, 1.0, -3.0, 0.0],
                         ids=["below-min", "equal-to-min", "negative-noisy", "zero"])
def test_update_keeps_a_noise_dominated_centre_without_rng(small_count: float) -> None:
    # Prepare: centre 0 -> (4, 2) / 2 = (2, 1); centre 2 -> (9, -3) / 3 = (3, -1) clipped
    # to (2, -1); centre 1 has count <= min_count = 1 and stays at (1, 1).
    counts = np.array([2.0, small_count, 3.0])

    # Execute
    new = update_centers(_previous(), _sums(), counts, min_count=1.0, box=BOX)

    # Assert
    np.testing.assert_array_equal(new, [[2.0, 1.0], [1.0, 1.0], [2.0, -1.0]])


def test_update_does_not_modify_its_inputs() -> None:
    # Prepare
    previous, sums, counts = _previous(), _sums(), np.array([2.0, 0.5, 3.0])

    # Execute
    update_centers(previous, sums, counts, min_count=1.0, box=BOX,
                   rng=np.random.default_rng(0))

    # Assert
    np.testing.assert_array_equal(previous, _previous())
    np.testing.assert_array_equal(sums, _sums())


def test_negative_min_count_is_treated_as_zero() -> None:
    # Prepare
    counts = np.array([2.0, 0.0, -1.0])

    # Execute
    new = update_centers(_previous(), _sums(), counts, min_count=-5.0, box=BOX)

    # Assert: counts of 0 and -1 never divide
    np.testing.assert_array_equal(new, [[2.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])


def test_update_with_rng_splits_the_largest_cluster_for_an_empty_centre() -> None:
    # Prepare: the largest cluster is centre 2 (count 3) with mean (3, -1); the step is
    # 0.05 of the box diagonal sqrt(20**2 + 20**2) = 20 sqrt(2), i.e. sqrt(2).
    counts = np.array([2.0, 0.5, 3.0])
    step = 0.05 * np.sqrt(800.0)

    # Execute
    new = update_centers(_previous(), _sums(), counts, min_count=1.0, box=WIDE_BOX,
                         rng=np.random.default_rng(5))

    # Assert
    np.testing.assert_array_equal(new[0], [2.0, 1.0])
    np.testing.assert_allclose((new[1] + new[2]) / 2, [3.0, -1.0], atol=1e-12)
    assert np.linalg.norm(new[1] - new[2]) == pytest.approx(step, rel=1e-12)


def test_update_with_rng_splits_the_largest_cluster_twice_for_two_empty_centres() -> None:
    # Prepare: sizes (10, -, -, 1) with centre 0 at mean m = (1, 0). The first empty centre
    # splits centre 0: c1 = m + d1, c0 = m - d1 (sizes become 5 and 5). The second empty centre
    # splits the first largest, centre 0 again: c2 = c0 + d2, c0 = c0 - d2. Hence
    # (c0 + c2) / 2 = m - d1, c1 + (c0 + c2) / 2 = 2 m, and |d1| = |d2| = step / 2.
    previous = np.zeros((4, 2))
    sums = np.array([[10.0, 0.0], [0.0, 0.0], [0.0, 0.0], [-5.0, -5.0]])
    counts = np.array([10.0, 0.0, 0.0, 1.0])
    step = 0.05 * np.sqrt(800.0)

    # Execute
    new = update_centers(previous, sums, counts, min_count=0.5, box=WIDE_BOX,
                         rng=np.random.default_rng(1))

    # Assert
    np.testing.assert_array_equal(new[3], [-5.0, -5.0])
    pair_mid = (new[0] + new[2]) / 2
    np.testing.assert_allclose(new[1] + pair_mid, [2.0, 0.0], atol=1e-12)
    assert np.linalg.norm(new[0] - new[2]) == pytest.approx(step, rel=1e-12)
    assert np.linalg.norm(new[1] - pair_mid) == pytest.approx(step, rel=1e-12)


def test_update_with_rng_keeps_centres_when_every_count_is_noise() -> None:
    # Prepare
    counts = np.array([0.1, 0.2, 0.3])

    # Execute
    new = update_centers(_previous(), _sums(), counts, min_count=1.0, box=BOX,
                         rng=np.random.default_rng(0))

    # Assert
    np.testing.assert_array_equal(new, _previous())


def test_update_with_the_same_seed_is_reproducible() -> None:
    # Prepare
    counts = np.array([2.0, 0.5, 3.0])

    # Execute
    a = update_centers(_previous(), _sums(), counts, min_count=1.0, box=WIDE_BOX,
                       rng=np.random.default_rng(3))
    b = update_centers(_previous(), _sums(), counts, min_count=1.0, box=WIDE_BOX,
                       rng=np.random.default_rng(3))

    # Assert
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("with_rng", [False, True], ids=["no-rng", "rng"])
def test_updated_centres_are_clipped_to_the_box(with_rng: bool) -> None:
    # Prepare: noisy means far outside the box
    rng = np.random.default_rng(0)
    previous = rng.uniform(-2, 2, size=(6, 2))
    sums = rng.normal(0, 100, size=(6, 2))
    counts = np.array([1.5, 0.0, 2.0, 1.1, -4.0, 3.0])

    # Execute
    new = update_centers(previous, sums, counts, min_count=1.0, box=BOX,
                         rng=np.random.default_rng(2) if with_rng else None)

    # Assert
    assert np.all(new >= BOX[0])
    assert np.all(new <= BOX[1])
    assert np.any(np.isin(new, [-2.0, 2.0]))


# --- candidate_centers -----------------------------------------------------------------------


def _mixed_spec() -> FeatureSpec:
    return FeatureSpec(name="mixed", features=(
        NumericFeature(name="age", bounds=(18.0, 95.0), weight=2.0),
        CategoricalFeature(name="job", categories=("a", "b", "c"), weight=0.5),
        NumericFeature(name="spend", bounds=(0.0, 1e4), transform="log1p"),
        CategoricalFeature(name="flag", categories=("no", "yes"), other=False, weight=3.0),
    ))


def test_candidates_lie_in_the_box_with_one_active_slot_per_categorical_block() -> None:
    # Prepare
    spec = _mixed_spec()
    lo, hi = spec.box()

    # Execute
    candidates = candidate_centers(spec, 500, np.random.default_rng(0))

    # Assert
    assert candidates.shape == (500, spec.dim) == (500, 8)
    assert np.all((candidates >= lo) & (candidates <= hi))
    slices = spec.slices()
    for name, weight in (("job", 0.5), ("flag", 3.0)):
        block = candidates[:, slices[name]]
        assert np.all((block == 0.0) | (block == weight))
        assert np.all((block == weight).sum(axis=1) == 1)
        assert np.all((block == weight).any(axis=0))  # every level gets drawn
    age = candidates[:, slices["age"]]
    assert age.min() < -0.9 and age.max() > 0.9  # spread over [-1, 1]


def test_candidates_are_data_independent_and_reproducible() -> None:
    # Prepare
    spec = _mixed_spec()

    # Execute
    a = candidate_centers(spec, 20, np.random.default_rng(7))
    b = candidate_centers(spec, 20, np.random.default_rng(7))
    c = candidate_centers(spec, 20, np.random.default_rng(8))

    # Assert
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --- fedprofile.client.statistics -----------------------------------------------------------


def test_cluster_partials_by_hand_on_five_points() -> None:
    # Prepare: centres (0, 0) and (10, 0); (4, -1) is 17 from the first and 37 from the second
    points = np.array([[1.0, 0.0], [9.0, 0.0], [2.0, 1.0], [11.0, 2.0], [4.0, -1.0]])
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])

    # Execute
    labels = assign(points, centers)
    sums, counts = cluster_partials(points, centers)

    # Assert
    assert labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_array_equal(sums, [[7.0, 0.0], [20.0, 2.0]])
    np.testing.assert_array_equal(counts, [3.0, 2.0])


def test_cluster_partials_of_a_centre_nobody_is_near_are_zero() -> None:
    # Prepare
    points = np.array([[1.0, 1.0], [2.0, 2.0]])
    centers = np.array([[1.5, 1.5], [100.0, 100.0]])

    # Execute
    sums, counts = cluster_partials(points, centers)

    # Assert
    np.testing.assert_array_equal(sums, [[3.0, 3.0], [0.0, 0.0]])
    np.testing.assert_array_equal(counts, [2.0, 0.0])


def test_cluster_partials_of_an_empty_matrix_are_zero() -> None:
    # Execute
    sums, counts = cluster_partials(np.zeros((0, 3)), np.ones((2, 3)))

    # Assert
    assert sums.shape == (2, 3)
    assert not sums.any()
    assert counts.tolist() == [0.0, 0.0]


def test_cluster_partials_equal_the_naive_reference_on_a_matrix_of_several_chunks() -> None:
    # Prepare: more rows than one chunk (65,536), so the last chunk is partial
    rng = np.random.default_rng(2024)
    n = 150_000
    assert n > 2 * statistics._CHUNK_ROWS
    matrix = rng.normal(size=(n, 4))
    centers = rng.normal(scale=1.5, size=(5, 4))

    # Execute
    sums, counts = cluster_partials(matrix, centers)

    # Assert
    ref_sums, ref_counts = _naive_partials(matrix, centers)
    np.testing.assert_array_equal(counts, ref_counts)
    assert counts.sum() == n
    np.testing.assert_allclose(sums, ref_sums, rtol=1e-9, atol=1e-8)
    np.testing.assert_allclose(sums.sum(axis=0), matrix.sum(axis=0), rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("chunk", [1, 3, 7, 64], ids=["chunk-1", "chunk-3", "chunk-7", "chunk-64"])
def test_cluster_partials_do_not_depend_on_the_chunk_size(monkeypatch: pytest.MonkeyPatch,
                                                          chunk: int) -> None:
    # Prepare
    rng = np.random.default_rng(chunk)
    matrix = rng.uniform(-1, 1, size=(50, 3))
    centers = rng.uniform(-1, 1, size=(4, 3))
    expected = _naive_partials(matrix, centers)
    monkeypatch.setattr(statistics, "_CHUNK_ROWS", chunk)

    # Execute
    sums, counts = cluster_partials(matrix, centers)

    # Assert
    np.testing.assert_array_equal(counts, expected[1])
    np.testing.assert_allclose(sums, expected[0], rtol=1e-12, atol=1e-12)


def test_cluster_partials_accept_an_integer_matrix() -> None:
    # Prepare
    matrix = np.array([[0, 0], [1, 1], [9, 9]], dtype=np.int64)
    centers = np.array([[0.0, 0.0], [10.0, 10.0]])

    # Execute
    sums, counts = cluster_partials(matrix, centers)

    # Assert
    assert sums.dtype == np.float64
    np.testing.assert_array_equal(sums, [[1.0, 1.0], [9.0, 9.0]])
    np.testing.assert_array_equal(counts, [2.0, 1.0])
