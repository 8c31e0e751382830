"""Utility benchmarks: segment and response-model quality against epsilon, in process.

The protocol is run with :func:`fedprofile.sim.inprocess.run_kmeans_inprocess`, the same stage and
partner computation as the Flower apps without the message passing (the end-to-end tests
check both give the same centres at epsilon = inf), so a table of many runs takes minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from fedprofile.config import InitMethod
from fedprofile.contract.assignment import assign
from fedprofile.contract.design import DesignData
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import ContractError
from fedprofile.presets.datasets import Preset
from fedprofile.presets.partition import Partition
from fedprofile.sim.evaluate import CENTRALIZED_SEEDS, kmeans_cost
from fedprofile.sim.inprocess import (
    NoisePlacement,
    run_kmeans_inprocess,
    run_response_inprocess,
)

__all__ = ["EPSILONS", "INITS", "BaselineRow", "Centralized", "ResponseRow", "UtilityRow",
           "bench_partitions", "centralized_kmeans", "kmeans_baselines", "kmeans_utility",
           "response_utility"]

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
INITS: tuple[InitMethod, ...] = get_args(InitMethod)
"""Every initialisation the k-means stage offers (all private: the start spends budget or
uses no data)."""


def bench_partitions(preset: Preset, n_partners: int | None = None, *,
                     seed: int = 0) -> list[Partition]:
    """The preset's partners; beyond one partner per value, the largest are cut in halves.

    Up to the number of distinct values of the preset's partition column this is
    :meth:`Preset.partitions` (values grouped into balanced groups). For more partners each
    value is a partner first, then the largest partner is repeatedly split into two halves
    at random (``seed``), like the retail preset's UK shards.
    """
    distinct = preset.frame[preset.partition_column].nunique(dropna=False)
    if n_partners is None or n_partners <= distinct:
        return preset.partitions(n_partners)
    if n_partners > len(preset.frame):
        raise ContractError(f"Cannot split {len(preset.frame)} customers into {n_partners} "
                            "partners.")
    parts = preset.partitions(distinct)
    rng = np.random.default_rng(seed)
    while len(parts) < n_partners:
        big = max(range(len(parts)), key=lambda i: len(parts[i]))
        part = parts.pop(big)
        order = rng.permutation(len(part))
        halves = np.array_split(order, 2)
        parts[big:big] = [Partition(f"{part.name}/{j + 1}", part.frame.iloc[np.sort(h)])
                          for j, h in enumerate(halves)]
    return parts


@dataclass(frozen=True)
class Centralized:
    """Centralized non-private k-means: the first seeded fit's centres and the mean cost."""

    centers: np.ndarray
    cost: float


def centralized_kmeans(pooled: np.ndarray, k: int) -> Centralized:
    """Mean cost of ``CENTRALIZED_SEEDS`` seeded ``KMeans(n_init=10)`` fits on ``pooled``."""
    fits = [KMeans(n_clusters=k, n_init=10, random_state=s).fit(pooled)
            for s in range(CENTRALIZED_SEEDS)]
    return Centralized(centers=fits[0].cluster_centers_,
                       cost=float(np.mean([kmeans_cost(pooled, f.cluster_centers_)
                                           for f in fits])))


@dataclass(frozen=True)
class UtilityRow:
    """Mean and standard deviation over seeds at one (init, partners, epsilon)."""

    init: str
    partners: int
    epsilon: float
    ratio_mean: float
    ratio_sd: float
    ari_mean: float
    ari_sd: float
    suppressed_mean: float
    seeds: int


def kmeans_utility(matrices: Sequence[np.ndarray], spec: FeatureSpec, *, k: int,
                   inits: Sequence[InitMethod] = INITS, epsilons: Sequence[float] = EPSILONS,
                   seeds: int = 3, rounds: int = 0, min_segment_size: int = 50,
                   delta: float = 1e-6, reference: Centralized | None = None,
                   noise: NoisePlacement = "partner",
                   progress: Callable[[], None] | None = None) -> list[UtilityRow]:
    """Cost ratio to centralized k-means and ARI against its first fit, per init and epsilon.

    ``reference`` defaults to :func:`centralized_kmeans` of the pooled matrices; pass it to
    compare several partner splits of the same customers against one reference. ``rounds``
    0 plans a run's default (:func:`fedprofile.run_defaults.default_rounds`); ``noise`` places
    the noise (:func:`fedprofile.sim.inprocess.run_kmeans_inprocess`).
    """
    pooled = np.vstack(matrices)
    ref = reference or centralized_kmeans(pooled, k)
    ref_labels = assign(pooled, ref.centers)
    rows = []
    for init in inits:
        for eps in epsilons:
            ratios, aris, suppressed = [], [], []
            for seed in range(seeds):
                result = run_kmeans_inprocess(matrices, spec, k=k, epsilon=eps, delta=delta,
                                              rounds=rounds, init=init, seed=seed,
                                              noise_seed=seed, noise=noise)
                ratios.append(kmeans_cost(pooled, result.centers) / ref.cost)
                aris.append(adjusted_rand_score(ref_labels, assign(pooled, result.centers)))
                suppressed.append(int((result.sizes < min_segment_size).sum()))
                if progress:
                    progress()
            rows.append(UtilityRow(init=init, partners=len(matrices), epsilon=eps,
                                   ratio_mean=float(np.mean(ratios)),
                                   ratio_sd=float(np.std(ratios)), ari_mean=float(np.mean(aris)),
                                   ari_sd=float(np.std(aris)),
                                   suppressed_mean=float(np.mean(suppressed)), seeds=seeds))
    return rows


@dataclass(frozen=True)
class ResponseRow:
    """Federated test metric (mean, sd over seeds) against the centralized one, per epsilon."""

    partners: int
    epsilon: float
    metric: str
    federated_mean: float
    federated_sd: float
    centralized: float
    seeds: int


def response_utility(designs: Sequence[DesignData], *, task: str, norm_bound: float,
                     target_bound: float, alpha: float = 1.0, rounds: int = 3,
                     epsilons: Sequence[float] = EPSILONS, seeds: int = 3, delta: float = 1e-6,
                     noise: NoisePlacement = "partner",
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
                                            alpha=alpha, rounds=rounds, noise_seed=seed,
                                            noise=noise)
            values.append(float(score(result.coef)))
            if progress:
                progress()
        rows.append(ResponseRow(partners=len(designs), epsilon=eps, metric=metric,
                                federated_mean=float(np.mean(values)),
                                federated_sd=float(np.std(values)), centralized=reference,
                                seeds=seeds))
    return rows


@dataclass(frozen=True)
class BaselineRow:
    """Cost ratios of non-private alternatives a user might otherwise pick."""

    partners: int
    averaged_local_centres: float
    averaged_index_aligned: float
    partners_alone_mean: float
    partners_alone_worst: float


def kmeans_baselines(matrices: Sequence[np.ndarray], *, k: int, seed: int = 0,
                     reference: Centralized | None = None) -> BaselineRow:
    """Cost ratios to centralized k-means of non-private alternatives.

    (a) Averaging each partner's local KMeans centres, matched to the first partner's by
    the Hungarian method and weighted by partner size; (a') the same average taken index by
    index without matching, as naive tutorials do; (b) each partner clustering alone,
    evaluated on everyone's customers. Partners with fewer than ``k`` customers are left
    out of the averages.
    """
    from scipy.optimize import linear_sum_assignment

    pooled = np.vstack(matrices)
    ref = reference or centralized_kmeans(pooled, k)
    local = [KMeans(n_clusters=min(k, len(m)), n_init=10, random_state=seed).fit(m)
             .cluster_centers_ for m in matrices]
    full = [(c, len(m)) for c, m in zip(local, matrices, strict=True) if len(c) == k]
    if not full:
        raise ContractError(f"No partner has {k} customers to train k = {k} local centres; "
                            "use fewer partners or a smaller k.")
    anchor = full[0][0]
    matched = []
    for centres, _ in full:
        _, match = linear_sum_assignment(((anchor[:, None, :] - centres[None, :, :]) ** 2)
                                         .sum(axis=2))
        matched.append(centres[match])
    weights = [n for _, n in full]
    averaged = np.average(matched, axis=0, weights=weights)
    aligned = np.average([c for c, _ in full], axis=0, weights=weights)
    alone = [kmeans_cost(pooled, c) / ref.cost for c in local]
    return BaselineRow(partners=len(matrices),
                       averaged_local_centres=kmeans_cost(pooled, averaged) / ref.cost,
                       averaged_index_aligned=kmeans_cost(pooled, aligned) / ref.cost,
                       partners_alone_mean=float(np.mean(alone)),
                       partners_alone_worst=float(np.max(alone)))


def _partner_matrices(dataset: str, partner_counts: Sequence[int | None]
                     ) -> tuple[FeatureSpec, list[list[np.ndarray]]]:
    """The preset's spec and, per partner count, each partner's transformed matrix."""
    from fedprofile.contract.features import transform_frame
    from fedprofile.contract.parser import load_spec
    from fedprofile.io.matrix_store import stored_values
    from fedprofile.presets.datasets import load_preset

    preset = load_preset(dataset)
    spec = load_spec(preset.spec_path)
    return spec, [[stored_values(transform_frame(p.frame, spec, source=p.name).matrix)
                   for p in bench_partitions(preset, n)] for n in partner_counts]


def segment_benchmark(dataset: str, *, k: int, partner_counts: Sequence[int | None] = (None,),
                      inits: Sequence[InitMethod] = INITS, epsilons: Sequence[float] = EPSILONS,
                      seeds: int = 3, rounds: int = 0, noise: NoisePlacement = "partner",
                      progress: Callable[[], None] | None = None
                      ) -> tuple[list[UtilityRow], list[BaselineRow]]:
    """:func:`kmeans_utility` and :func:`kmeans_baselines` of a preset per partner count.

    Every partner count is compared with one centralized reference (the same customers).
    """
    spec, splits = _partner_matrices(dataset, partner_counts)
    for mats in splits:
        if max(len(m) for m in mats) < k:
            raise ContractError(f"With {len(mats)} partners no partner has {k} customers, so "
                                "the local baselines cannot be trained; use fewer partners or "
                                "a smaller k.")
    reference = centralized_kmeans(np.vstack(splits[0]), k)
    rows: list[UtilityRow] = []
    baselines = []
    for mats in splits:
        rows += kmeans_utility(mats, spec, k=k, inits=inits, epsilons=epsilons, seeds=seeds,
                               rounds=rounds, reference=reference, noise=noise,
                               progress=progress)
        baselines.append(kmeans_baselines(mats, k=k, reference=reference))
    return rows, baselines


def response_benchmark(dataset: str, *, task: str, target: str,
                       partner_counts: Sequence[int | None] = (None,),
                       epsilons: Sequence[float] = EPSILONS, seeds: int = 3, rounds: int = 3,
                       noise: NoisePlacement = "partner",
                       progress: Callable[[], None] | None = None) -> list[ResponseRow]:
    """:func:`response_utility` of a preset's ridge or logistic target per partner count."""
    from fedprofile.contract.design import design_data, design_norm_bound, target_bound
    from fedprofile.contract.parser import load_spec
    from fedprofile.presets.datasets import load_preset

    if task not in ("ridge", "logistic") or not target:
        raise ContractError("Give --task ridge|logistic and a --target of the spec.")
    preset = load_preset(dataset)
    spec = load_spec(preset.spec_path)
    rows: list[ResponseRow] = []
    for n in partner_counts:
        designs = [design_data(p.frame, spec, target, segment_centers=None, holdout=0.2,
                               seed=0, source=p.name) for p in bench_partitions(preset, n)]
        rows += response_utility(designs, task=task, rounds=rounds,
                                 norm_bound=design_norm_bound(spec, target, segment_aware=False),
                                 target_bound=target_bound(spec, target), epsilons=epsilons,
                                 seeds=seeds, noise=noise, progress=progress)
    return rows


def segment_table(rows: Sequence[UtilityRow], baselines: Sequence[BaselineRow]) -> str:
    """Markdown tables of segment utility rows and of the non-private baselines."""
    seeds = rows[0].seeds if rows else 0
    lines = [f"| init | partners | ε | cost / centralized (mean ± sd, {seeds} seeds) | "
             "ARI (mean ± sd) | suppressed segments |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.init} | {r.partners} | {r.epsilon:g} | {r.ratio_mean:.3f} ± "
              f"{r.ratio_sd:.3f} | {r.ari_mean:.2f} ± {r.ari_sd:.2f} | {r.suppressed_mean:.1f} |"
              for r in rows]
    lines += ["", "| partners | averaged local centres, matched (not private) | "
              "averaged local centres, index-aligned (not private) | partners alone, "
              "mean / worst |", "|---|---|---|---|"]
    lines += [f"| {b.partners} | {b.averaged_local_centres:.3f} | "
              f"{b.averaged_index_aligned:.3f} | {b.partners_alone_mean:.3f} / "
              f"{b.partners_alone_worst:.3f} |" for b in baselines]
    return "\n".join(lines)


def response_table(rows: Sequence[ResponseRow]) -> str:
    """Markdown table of response utility rows."""
    metric, seeds = (rows[0].metric, rows[0].seeds) if rows else ("", 0)
    lines = [f"| partners | ε | federated {metric} (mean ± sd, {seeds} seeds) | centralized | "
             "gap |", "|---|---|---|---|---|"]
    lines += [f"| {r.partners} | {r.epsilon:g} | {r.federated_mean:.4f} ± "
              f"{r.federated_sd:.4f} | {r.centralized:.4f} | "
              f"{r.centralized - r.federated_mean:+.4f} |" for r in rows]
    return "\n".join(lines)
