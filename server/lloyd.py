"""Lloyd's step on released aggregates, and what the coordinator derives from them.

Pure post-processing of noised sums and counts: the centre update (sums of vectors or of
displacements), the weighted re-clustering of the private start's summary, and the radius
the private Lloyd rounds clip displacements to.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.cluster import KMeans

__all__ = ["spread_radius", "update_centers", "weighted_recluster"]


def update_centers(previous: np.ndarray, sums: np.ndarray, counts: np.ndarray, *,
                   min_count: float, box: tuple[np.ndarray, np.ndarray],
                   rng: np.random.Generator | None = None, split_step: float = 0.05,
                   displacement: bool = False) -> np.ndarray:
    """Lloyd's update ``sums / counts`` by post-processing of noised aggregates.

    With ``displacement`` the sums are of displacements from ``previous`` and the update
    is ``previous + sums / counts``.

    A centre whose noisy count is at most ``min_count`` is empty or noise-dominated. With
    ``rng`` it is moved to split the largest remaining segment (both centres step
    ``split_step`` of the box diagonal apart along a random direction), so no centre stays
    wasted in an empty region; without ``rng`` it keeps its previous position. New centres
    are projected onto the public box of the scaled space.
    """
    new = previous.copy()
    ok = counts > max(min_count, 0.0)
    new[ok] = sums[ok] / counts[ok, None] + (previous[ok] if displacement else 0.0)
    if rng is not None and ok.any():
        sizes = np.where(ok, counts, -np.inf)
        step = split_step * float(np.linalg.norm(box[1] - box[0]))
        for j in np.flatnonzero(~ok):
            big = int(np.argmax(sizes))
            direction = rng.normal(size=new.shape[1])
            direction *= step / 2 / max(float(np.linalg.norm(direction)), 1e-12)
            new[j], new[big] = new[big] + direction, new[big] - direction
            sizes[big] /= 2
            sizes[j] = sizes[big]
    return np.clip(new, box[0], box[1])


def weighted_recluster(points: np.ndarray, weights: np.ndarray, k: int, seed: int,
                       start: np.ndarray | None = None) -> np.ndarray:
    """K centres of weighted points: 50 k-means++ restarts (post-processing costs no budget).

    With ``start`` (k centres) a run from it competes too; the lowest weighted inertia wins.
    """
    fits = [KMeans(n_clusters=k, init="k-means++", n_init=50, random_state=seed)
            .fit(points, sample_weight=weights)]
    if start is not None:
        fits.append(KMeans(n_clusters=k, init=start, n_init=1).fit(points, sample_weight=weights))
    return min(fits, key=lambda fit: fit.inertia_).cluster_centers_


def spread_radius(means: np.ndarray, weights: np.ndarray, centers: np.ndarray,
                   norm_bound: float, scale: float, floor: float) -> float:
    """The Lloyd rounds' radius, at most ``norm_bound``, from the start's summary.

    ``scale`` times the weighted RMS distance of the start's candidate means to
    their nearest centre: post-processing of the start's release. That spread is below the
    customers' own (each mean averages a candidate's customers; on the shipped data sets
    0.75-1.0 of it), so the radius sits near the customers' RMS distance to their centre.
    """
    distances = np.min(((means[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2), axis=1)
    spread = math.sqrt(float(np.sum(weights * distances)) / max(float(weights.sum()), 1e-12))
    return min(norm_bound, max(scale * spread, floor * norm_bound))
