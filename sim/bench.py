"""Utility benchmarks: segment and response-model quality against epsilon, in process.

The protocol is run with :func:`sim.inprocess.run_kmeans_inprocess`, the same stage and
partner computation as the Flower apps without the message passing (the end-to-end tests
check both give the same centres at epsilon = inf), so a table of many runs takes minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from client.statistics import assign
from fedprofile.contract import FeatureSpec
from fedprofile.design import DesignData
from sim.evaluate import CENTRALIZED_SEEDS, kmeans_cost
from sim.inprocess import run_kmeans_inprocess, run_response_inprocess

__all__ = ["BaselineRow", "ResponseRow", "UtilityRow", "kmeans_baselines", "kmeans_utility",
           "response_utility"]

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)


@dataclass(frozen=True)
class UtilityRow:
    """Mean and standard deviation over seeds at one epsilon."""

    epsilon: float
    ratio_mean: float
    ratio_sd: float
    ari_mean: float
    suppressed_mean: float
    seeds: int


def kmeans_utility(matrices: Sequence[np.ndarray], spec: FeatureSpec, *, k: int,
                   epsilons: Sequence[float] = EPSILONS, seeds: int = 3, rounds: int = 3,
                   min_segment_size: int = 50, delta: float = 1e-6,
                   progress: Callable[[], None] | None = None) -> list[UtilityRow]:
    """Cost ratio to centralized k-means (mean of 5 seeded fits) and ARI, per epsilon."""
    pooled = np.vstack(matrices)
    fits = [KMeans(n_clusters=k, n_init=10, random_state=s).fit(pooled)
            for s in range(CENTRALIZED_SEEDS)]
    reference = float(np.mean([kmeans_cost(pooled, f.cluster_centers_) for f in fits]))
    rows = []
    for eps in epsilons:
        ratios, aris, suppressed = [], [], []
        for seed in range(seeds):
            result = run_kmeans_inprocess(matrices, spec, k=k, epsilon=eps, delta=delta,
                                          rounds=rounds, seed=seed, noise_seed=seed)
            ratios.append(kmeans_cost(pooled, result.centers) / reference)
            aris.append(adjusted_rand_score(fits[0].labels_, assign(pooled, result.centers)))
            suppressed.append(int((result.sizes < min_segment_size).sum()))
            if progress:
                progress()
        rows.append(UtilityRow(epsilon=eps, ratio_mean=float(np.mean(ratios)),
                               ratio_sd=float(np.std(ratios)), ari_mean=float(np.mean(aris)),
                               suppressed_mean=float(np.mean(suppressed)), seeds=seeds))
    return rows


@dataclass(frozen=True)
class ResponseRow:
    """Federated test metric (mean, sd over seeds) against the centralized one, per epsilon."""

    epsilon: float
    metric: str
    federated_mean: float
    federated_sd: float
    centralized: float
    seeds: int


def response_utility(designs: Sequence[DesignData], *, task: str, norm_bound: float,
                     target_bound: float, alpha: float = 1.0, rounds: int = 3,
                     epsilons: Sequence[float] = EPSILONS, seeds: int = 3, delta: float = 1e-6,
                     progress: Callable[[], None] | None = None) -> list[ResponseRow]:
    """Held-out R² (ridge) or AUC (logistic) of the federated model per epsilon."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.metrics import r2_score, roc_auc_score

    z_tr = np.vstack([d.z_train for d in designs])
    y_tr = np.concatenate([d.y_train for d in designs])
    z_te = np.vstack([d.z_test for d in designs])
    y_te = np.concatenate([d.y_test for d in designs])
    if task == "ridge":
        metric, score = "R²", lambda theta: r2_score(y_te, np.clip(z_te @ theta, -0.5, 0.5))
        central = Ridge(alpha=alpha).fit(z_tr[:, :-1], y_tr).predict(z_te[:, :-1])
        reference = float(r2_score(y_te, central))
    else:
        metric, score = "AUC", lambda theta: roc_auc_score(y_te, z_te @ theta)
        model = LogisticRegression(C=1.0 / alpha, max_iter=2000).fit(z_tr[:, :-1], y_tr)
        reference = float(roc_auc_score(y_te, model.decision_function(z_te[:, :-1])))
    rows = []
    for eps in epsilons:
        values = []
        for seed in range(seeds):
            result = run_response_inprocess(designs, task=task, epsilon=eps, delta=delta,
                                            norm_bound=norm_bound, target_bound=target_bound,
                                            alpha=alpha, rounds=rounds, noise_seed=seed)
            values.append(float(score(result.coef)))
            if progress:
                progress()
        rows.append(ResponseRow(epsilon=eps, metric=metric, federated_mean=float(np.mean(values)),
                                federated_sd=float(np.std(values)), centralized=reference,
                                seeds=seeds))
    return rows


@dataclass(frozen=True)
class BaselineRow:
    """Cost ratios of two non-private alternatives a user might otherwise pick."""

    averaged_local_centres: float
    partners_alone_mean: float
    partners_alone_worst: float


def kmeans_baselines(matrices: Sequence[np.ndarray], *, k: int, seed: int = 0) -> BaselineRow:
    """Cost ratios to centralized k-means of two non-private alternatives.

    (a) Averaging each partner's local KMeans centres (matched to the first partner's by
    the Hungarian method, weighted by partner size); (b) each partner clustering alone,
    evaluated on everyone's customers.
    """
    from scipy.optimize import linear_sum_assignment

    pooled = np.vstack(matrices)
    reference = float(np.mean([
        kmeans_cost(pooled, KMeans(n_clusters=k, n_init=10, random_state=s)
                    .fit(pooled).cluster_centers_) for s in range(CENTRALIZED_SEEDS)]))
    local = [KMeans(n_clusters=min(k, len(m)), n_init=10, random_state=seed).fit(m)
             .cluster_centers_ for m in matrices]
    anchor = local[0]
    total = np.zeros_like(anchor)
    for centres, m in zip(local, matrices, strict=True):
        if len(centres) < k:
            continue
        cost = ((anchor[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        _, match = linear_sum_assignment(cost)
        total += len(m) * centres[match]
    averaged = total / sum(len(m) for m, c in zip(matrices, local, strict=True) if len(c) == k)
    alone = [kmeans_cost(pooled, c) / reference for c in local]
    return BaselineRow(averaged_local_centres=kmeans_cost(pooled, averaged) / reference,
                       partners_alone_mean=float(np.mean(alone)),
                       partners_alone_worst=float(np.max(alone)))
