"""Oracle tests: at epsilon = inf the federated protocol is exactly Lloyd's algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.cluster import KMeans

from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec
from fedprofile.presets.datasets import load_preset
from fedprofile.sim.inprocess import run_kmeans_inprocess


@pytest.fixture(scope="module")
def bank_partners() -> tuple[list[np.ndarray], object]:
    preset = load_preset("bank")
    spec = load_spec(preset.spec_path)
    mats = [transform_frame(p.frame, spec).matrix for p in preset.partitions(5)]
    return mats, spec


@pytest.mark.parametrize("rounds", [1, 3, 6], ids=["1-round", "3-rounds", "6-rounds"])
def test_federated_lloyd_at_infinite_epsilon_equals_sklearn_lloyd(bank_partners, rounds) -> None:
    # Prepare: a public start of 6 centres, the same for both
    mats, spec = bank_partners
    pooled = np.vstack(mats)
    start = pooled[np.random.default_rng(3).choice(len(pooled), 6, replace=False)]
    # Execute
    fed = run_kmeans_inprocess(mats, spec, k=6, epsilon=math.inf, rounds=rounds,
                               initial_centers=start, init="random")
    central = KMeans(n_clusters=6, init=start, n_init=1, max_iter=rounds, tol=0.0,
                     algorithm="lloyd").fit(pooled)
    # Assert
    np.testing.assert_allclose(fed.centers, central.cluster_centers_, rtol=0, atol=1e-9)


def test_private_run_differs_from_non_private_run(bank_partners) -> None:
    mats, spec = bank_partners
    start = np.vstack(mats)[:6]
    exact = run_kmeans_inprocess(mats, spec, k=6, epsilon=math.inf, rounds=2,
                                 initial_centers=start, init="random")
    noisy = run_kmeans_inprocess(mats, spec, k=6, epsilon=1.0, rounds=2,
                                 initial_centers=start, init="random", noise_seed=0)
    assert not np.allclose(exact.centers, noisy.centers, atol=1e-6)
