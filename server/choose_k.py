"""Choosing the number of segments from the private start's noisy summary (``--k auto``).

The over-clustering start releases noised sums and counts for many candidate centres; the
coordinator turns them into weighted points (noisy means, noisy counts). Clustering those
points for every k of a declared range and scoring each clustering by its weighted
silhouette is post-processing of that release: choosing k costs no extra privacy budget.

A k is *feasible* when every segment of the summary holds at least ``min_mass`` customers
(the suppression threshold with a margin for the Lloyd rounds moving customers), so the
chosen segments can all be published. The feasible k with the highest silhouette wins; the
smallest k of the range is the fallback when none is feasible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans

__all__ = ["KChoice", "choose_k", "weighted_silhouette"]


def weighted_silhouette(points: np.ndarray, weights: np.ndarray, labels: np.ndarray) -> float:
    """Silhouette of a clustering of weighted points.

    Distances to a cluster are weight-averaged, a point's own weight is left out of its own
    cluster (a cluster of one point scores 0, as in scikit-learn), and the point scores are
    averaged with the weights. With unit weights this is scikit-learn's
    ``silhouette_score``. Leaving the own weight out matters: a summary point stands for
    customers spread around it, so splitting it off into a cluster of its own must not
    look like a perfectly tight cluster.

    Examples
    --------
    >>> pts = np.array([[0.0], [0.1], [5.0], [5.1]])
    >>> round(weighted_silhouette(pts, np.ones(4), np.array([0, 0, 1, 1])), 3)
    0.98
    """
    clusters = np.unique(labels)
    if len(clusters) < 2:
        return 0.0
    sq = (points**2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * points @ points.T, 0.0))
    member = (labels[:, None] == clusters[None, :]).astype(float) * weights[:, None]
    mass = member.sum(0)
    to_cluster = dist @ member
    rows, own = np.arange(len(points)), np.searchsorted(clusters, labels)
    others_mass = mass[own] - weights
    a = to_cluster[rows, own] / np.maximum(others_mass, 1e-300)
    mean_dist = to_cluster / mass[None, :]
    mean_dist[rows, own] = np.inf
    b = mean_dist.min(1)
    denom = np.maximum(a, b)
    valid = (others_mass > 1e-12 * mass[own]) & (denom > 0)
    score = np.where(valid, (b - a) / np.where(denom > 0, denom, 1.0), 0.0)
    return float((weights * score).sum() / weights.sum())


@dataclass(frozen=True)
class KChoice:
    """The chosen k, its centres and the curve it was chosen from (one row per k)."""

    k: int
    centers: np.ndarray
    curve: list[dict[str, float | bool]]


def choose_k(points: np.ndarray, weights: np.ndarray, *, k_min: int, k_max: int,
             min_mass: float, seed: int) -> KChoice:
    """Cluster the weighted summary for every k in ``[k_min, k_max]`` and pick one.

    Parameters
    ----------
    points, weights : ndarray
        The noisy candidate means and their noisy counts (positive).
    k_min, k_max : int
        The declared range, ``2 <= k_min <= k_max``; ``k_max`` is capped below the number
        of points.
    min_mass : float
        The smallest segment mass that counts as publishable.
    seed : int
        Seeds scikit-learn's k-means++ restarts.
    """
    k_max = max(min(k_max, len(points) - 1), k_min)  # k = len(points) is all singletons
    curve: list[dict[str, float | bool]] = []
    fits: dict[int, np.ndarray] = {}
    for k in range(k_min, k_max + 1):
        km = KMeans(n_clusters=k, init="k-means++", n_init=10, random_state=seed)
        km.fit(points, sample_weight=weights)
        masses = np.bincount(km.labels_, weights=weights, minlength=k)
        fits[k] = km.cluster_centers_
        curve.append({"k": k, "silhouette": weighted_silhouette(points, weights, km.labels_),
                      "cost": float(km.inertia_), "smallest_segment": float(masses.min()),
                      "feasible": bool(masses.min() >= min_mass)})
    feasible = [row for row in curve if row["feasible"]]
    best = max(feasible, key=lambda row: row["silhouette"]) if feasible else curve[0]
    k = int(best["k"])
    return KChoice(k=k, centers=fits[k], curve=curve)
