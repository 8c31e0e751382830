"""Tests for ``--k auto``: the weighted silhouette and the choice of k from a noisy summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from fedprofile.contract.spec import FeatureSpec, NumericFeature
from fedprofile.server.choose_k import choose_k, weighted_silhouette
from fedprofile.sim.inprocess import run_kmeans_inprocess

SPEC = FeatureSpec(name="blobs", features=tuple(
    NumericFeature(name=f"x{i}", bounds=(0.0, 1.0)) for i in range(4)))


def _blobs(true_k: int, per_cluster: int, seed: int) -> np.ndarray:
    """Well-separated clusters (centres >= 0.25 apart, sd 0.03) in the scaled box."""
    rng = np.random.default_rng(seed)
    while True:
        centres = rng.uniform(-0.35, 0.35, size=(true_k, SPEC.dim))
        gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2) + np.eye(true_k)
        if gaps.min() > 0.25:
            break
    rows = np.vstack([c + rng.normal(scale=0.03, size=(per_cluster, SPEC.dim)) for c in centres])
    return rng.permutation(np.clip(rows, -0.5, 0.5))


def test_weighted_silhouette_with_unit_weights_is_sklearns() -> None:
    rng = np.random.default_rng(0)
    points, labels = rng.normal(size=(120, 3)), rng.integers(0, 4, size=120)
    assert weighted_silhouette(points, np.ones(120), labels) == pytest.approx(
        silhouette_score(points, labels), abs=1e-9)


def test_weighted_silhouette_weights_points() -> None:
    # a heavy point in the wrong cluster pulls the score down more than a light one
    points = np.array([[0.0], [0.2], [5.0], [5.2], [2.6]])
    labels = np.array([0, 0, 1, 1, 0])
    light = weighted_silhouette(points, np.array([5, 5, 5, 5, 1.0]), labels)
    heavy = weighted_silhouette(points, np.array([5, 5, 5, 5, 20.0]), labels)
    assert heavy < light


def test_choose_k_never_picks_a_k_with_an_unpublishable_segment() -> None:
    # two big groups and one tiny far-away point: k = 3 separates best but cannot be published
    points = np.array([[0.0], [0.1], [5.0], [5.1], [20.0]])
    weights = np.array([500, 500, 500, 500, 10.0])
    choice = choose_k(points, weights, k_min=2, k_max=3, min_mass=100, seed=0)
    by_k = {row["k"]: row for row in choice.curve}
    assert by_k[3]["silhouette"] > by_k[2]["silhouette"] and not by_k[3]["feasible"]
    assert choice.k == 2 and len(choice.centers) == 2


@pytest.mark.parametrize("true_k", [3, 5, 7])
def test_k_auto_finds_well_separated_clusters_without_noise(true_k: int) -> None:
    rows = _blobs(true_k, 1500, seed=true_k)
    result = run_kmeans_inprocess(np.array_split(rows, 4), SPEC, k=10, epsilon=math.inf,
                                  k_range=(2, 10), min_segment_size=50, seed=0)
    assert len(result.centers) == true_k


def test_k_auto_at_epsilon_one_finds_clusters_of_a_bank_sized_federation() -> None:
    # 40,000 customers in 5 clusters, 4 partners, epsilon = 1 for the whole run
    rows = _blobs(5, 8000, seed=0)
    result = run_kmeans_inprocess(np.array_split(rows, 4), SPEC, k=10, epsilon=1.0,
                                  k_range=(2, 10), min_segment_size=50, seed=0, noise_seed=0)
    assert len(result.centers) == 5
