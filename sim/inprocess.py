"""The protocols run in one process with plain NumPy, without Flower.

The same stage object and the same partner computation (partials, mechanisms) as the
Flower apps, with the message passing replaced by function calls. It is the reference for
the framework's overhead in benchmarks, and the fast path for exactness tests and tuning.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from fedprofile.client.response import gram_statistics
from fedprofile.client.statistics import cluster_partials
from fedprofile.config import InitMethod
from fedprofile.contract.design import DesignData
from fedprofile.contract.spec import FeatureSpec
from fedprofile.privacy.accounting import planning_epsilon
from fedprofile.privacy.mechanisms import GaussianMechanism
from fedprofile.privacy.secagg.plan import plan_secagg
from fedprofile.privacy.secagg.simulate import simulate_release
from fedprofile.protocol import GradientReply, GramReply, GramRequest, KMeansReply, ResponseTask
from fedprofile.run_defaults import default_candidates, default_rounds
from fedprofile.server.kmeans import KMeansResult, KMeansStage, plan_kmeans
from fedprofile.server.regression import LogisticStage, RegressionResult, RidgeStage, plan_response

__all__ = ["MAX_PARTNER_CUSTOMERS", "NoisePlacement", "released", "run_kmeans_inprocess",
           "run_response_inprocess"]

NoisePlacement = Literal["partner", "secagg"]
MAX_PARTNER_CUSTOMERS = 10**8
"""Public bound on one partner's customers: secure aggregation sizes its ring from it."""


def released(partials: Sequence[Sequence[np.ndarray]], releases: Sequence[tuple[float, float]],
             *, noise: NoisePlacement, rng: np.random.Generator) -> list[list[np.ndarray]]:
    """What the coordinator receives of one round: each partner's noised statistics, or sums.

    ``partials[i][j]`` is partner ``i``'s statistic ``j``, released with ``releases[j]`` =
    (sensitivity, noise multiplier). ``partner``: each partner adds Gaussian noise of
    ``multiplier * sensitivity`` to each statistic, partner by partner as the Flower apps
    do. ``secagg``: every partner quantises and adds a Skellam share, and the coordinator
    gets one securely summed list whose noise matches a single Gaussian draw of that size
    (no dropouts planned).
    """
    if noise == "partner":
        mechs = [GaussianMechanism(sensitivity=s, noise_multiplier=z) for s, z in releases]
        return [[m.randomise(v, rng) for m, v in zip(mechs, stats, strict=True)]
                for stats in partials]
    return [[_secure_sum([stats[j] for stats in partials], sensitivity, z, rng)
             for j, (sensitivity, z) in enumerate(releases)]]


def _secure_sum(vectors: Sequence[np.ndarray], sensitivity: float, noise_multiplier: float,
                rng: np.random.Generator) -> np.ndarray:
    flat = [np.ravel(v) for v in vectors]
    if flat[0].size == 0:  # nothing to release (a Gram without a target column)
        return np.zeros_like(vectors[0])
    plan = plan_secagg(partners=len(flat), dropouts=0, dim=flat[0].size,
                       bound=MAX_PARTNER_CUSTOMERS * sensitivity, sensitivity=sensitivity,
                       mu=1.0 / noise_multiplier if noise_multiplier > 0 else math.inf)
    total, _ = simulate_release(plan, {f"p{i}": v for i, v in enumerate(flat)}, rng)
    return total.reshape(np.shape(vectors[0]))


def run_kmeans_inprocess(matrices: Sequence[np.ndarray], spec: FeatureSpec, *, k: int,
                         epsilon: float, delta: float = 1e-6, rounds: int = 0,
                         init: InitMethod = "overcluster", candidates: int = 0, seed: int = 0,
                         initial_centers: np.ndarray | None = None,
                         noise_seed: int | None = None, k_range: tuple[int, int] | None = None,
                         min_segment_size: int = 0, noise: NoisePlacement = "partner",
                         **plan_options: Any) -> KMeansResult:
    """Federated DP k-means over ``matrices`` (one scaled matrix per partner), in process.

    ``noise`` places the noise (see :func:`released`); ``rounds`` 0 plans
    :func:`fedprofile.run_defaults.default_rounds` of ``epsilon``, ``noise`` and the partner
    count (no dropouts); ``noise_seed`` seeds the partners' noise (None: OS entropy);
    ``k_range`` chooses k as ``--k auto`` does (``k`` is then its upper bound);
    ``plan_options`` go to :func:`fedprofile.server.kmeans.plan_kmeans`.
    """
    epsilon = planning_epsilon(epsilon, delta) if noise == "secagg" else epsilon
    plan = plan_kmeans(epsilon=epsilon, delta=delta,
                       lloyd_rounds=rounds or default_rounds(
                           epsilon, delta=delta, noise=noise, partners=len(matrices)),
                       norm_bound=spec.norm_bound, init=init, **plan_options)
    stage = KMeansStage(spec=spec, plan=plan, k=k, n_partners=len(matrices),
                        run_id=uuid.uuid4().hex[:16], fingerprint=spec.fingerprint(),
                        candidates=candidates or default_candidates(
                            k, spec.dim, private=math.isfinite(epsilon)), seed=seed,
                        initial_centers=initial_centers, k_range=k_range,
                        min_segment_size=min_segment_size)
    rng = np.random.default_rng(noise_seed)
    for rnd in stage.rounds():
        request = stage.configure(rnd)
        partials = [cluster_partials(matrix, request.centers, request.radius)
                    for matrix in matrices]
        received = released(partials, [(request.sums_sensitivity(spec.norm_bound),
                                         request.sum_noise_multiplier),
                                       (1.0, request.count_noise_multiplier)],
                            noise=noise, rng=rng)
        stage.aggregate(rnd, [KMeansReply(sums=sums, counts=counts, events=())
                              for sums, counts in received])
    result = stage.finalize()
    return result


def run_response_inprocess(designs: Sequence[DesignData], *, task: str, epsilon: float,
                           norm_bound: float, target_bound: float, delta: float = 1e-6,
                           alpha: float = 1.0, rounds: int = 3,
                           noise_seed: int | None = None,
                           noise: NoisePlacement = "partner") -> RegressionResult:
    """Federated DP ridge or logistic regression over partners' design data, in process.

    ``noise`` places the noise as in :func:`run_kmeans_inprocess`.
    """
    epsilon = planning_epsilon(epsilon, delta) if noise == "secagg" else epsilon
    plan = plan_response(task=task, epsilon=epsilon, delta=delta,
                         norm_bound=norm_bound, target_bound=target_bound, rounds=rounds)
    dim = designs[0].z_train.shape[1]
    task_info = ResponseTask(run_id="inprocess", spec_fingerprint="", stage=task, round=0,
                             target="", holdout=0.0, holdout_seed=0,
                             segment_centers=np.zeros((0,)))
    stage_cls = RidgeStage if task == "ridge" else LogisticStage
    stage = stage_cls(plan=plan, task=task_info, dim=dim, alpha=alpha)
    rng = np.random.default_rng(noise_seed)
    for rnd in stage.rounds():
        request = stage.configure(rnd)
        replies: list  # GramReply or GradientReply, as the stage asked
        if isinstance(request, GramRequest):
            stats = [gram_statistics(d.z_train, d.y_train if request.with_target else None)
                     for d in designs]
            received = released(stats, [(norm_bound**2, request.gram_noise_multiplier),
                                        (norm_bound * target_bound,
                                         request.target_noise_multiplier)],
                                noise=noise, rng=rng)
            replies = [GramReply(gram_upper=gram, xty=xty, events=()) for gram, xty in received]
        else:
            totals = [_logistic_gradient(d.z_train, d.y_train, request.theta, request.clip)
                      for d in designs]
            replies = [GradientReply(gradient=gradient, events=()) for (gradient,) in released(
                [[t] for t in totals], [(request.clip, request.noise_multiplier)],
                noise=noise, rng=rng)]
        stage.aggregate(rnd, replies)
    return stage.finalize()


def _logistic_gradient(z: np.ndarray, y: np.ndarray, theta: np.ndarray, clip: float
                       ) -> np.ndarray:
    """Clipped per-customer gradient sum in NumPy (the Opacus path gives the same numbers)."""
    per = (1.0 / (1.0 + np.exp(-(z @ theta))) - y)[:, None] * z
    norms = np.linalg.norm(per, axis=1)
    return np.minimum(1.0, clip / np.maximum(norms, 1e-12)) @ per
