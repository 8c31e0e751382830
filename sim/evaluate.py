"""Simulation-only evaluation against centralized scikit-learn on the pooled data.

This needs every partner's data in one place, which only a simulation has: it is a
measurement of the protocol, not a part of it, and releases nothing to anyone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from fedprofile.contract.assignment import assign
from fedprofile.models.segment_model import SegmentModel

__all__ = ["CENTRALIZED_SEEDS", "evaluate_segments", "kmeans_cost"]

CENTRALIZED_SEEDS = 5


def kmeans_cost(matrix: np.ndarray, centers: np.ndarray) -> float:
    """Sum of squared distances of every row to its nearest centre."""
    labels = assign(matrix, centers)
    return float(np.sum((matrix - centers[labels]) ** 2))


def evaluate_segments(model: SegmentModel, pooled: np.ndarray, *, seed: int) -> dict[str, Any]:
    """Cost of the federated centres against centralized ``KMeans`` (k-means++, n_init=10).

    The ratio is taken against the mean cost of ``CENTRALIZED_SEEDS`` seeded fits, since
    ``KMeans`` itself varies by a few percent between seeds (DESIGN §7).
    """
    k = model.k
    fits = [KMeans(n_clusters=k, n_init=10, random_state=seed + i).fit(pooled)
            for i in range(CENTRALIZED_SEEDS)]
    costs = [kmeans_cost(pooled, f.cluster_centers_) for f in fits]
    fed_cost = kmeans_cost(pooled, model.cluster_centers_)
    per_round = [{"round": int(h["round"]), "stage": h["stage"],
                  "cost": kmeans_cost(pooled, np.asarray(h["centers_scaled"]))}
                 for h in model.history if len(h["centers_scaled"]) == k]
    labels = assign(pooled, model.cluster_centers_)
    return {"cost_federated": fed_cost, "cost_centralized": costs[0],
            "cost_centralized_mean": float(np.mean(costs)),
            "cost_centralized_sd": float(np.std(costs)),
            "cost_ratio": fed_cost / float(np.mean(costs)),
            "cost_ratio_best": fed_cost / float(np.min(costs)),
            "ari": float(adjusted_rand_score(fits[0].labels_, labels)),
            "cost_per_round": per_round,
            "suppressed_segments": int(model.suppressed_.sum())}
