"""The protocols run in one process with plain NumPy, without Flower.

The same stage object and the same partner computation (partials, mechanisms) as the
Flower apps, with the message passing replaced by function calls. It is the reference for
the framework's overhead in benchmarks, and the fast path for exactness tests and tuning.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence

import numpy as np

from fedprofile.client.response import gram_statistics
from fedprofile.client.statistics import cluster_partials
from fedprofile.config import InitMethod, default_candidates, default_rounds
from fedprofile.contract.design import DesignData
from fedprofile.contract.spec import FeatureSpec
from fedprofile.privacy.mechanisms import GaussianMechanism
from fedprofile.protocol import GradientReply, GramReply, GramRequest, KMeansReply, ResponseTask
from fedprofile.server.kmeans import KMeansResult, KMeansStage, plan_kmeans
from fedprofile.server.regression import LogisticStage, RegressionResult, RidgeStage, plan_response

__all__ = ["run_kmeans_inprocess", "run_response_inprocess"]


def run_kmeans_inprocess(matrices: Sequence[np.ndarray], spec: FeatureSpec, *, k: int,
                         epsilon: float, delta: float = 1e-6, rounds: int = 0,
                         init: InitMethod = "overcluster", candidates: int = 0, seed: int = 0,
                         initial_centers: np.ndarray | None = None,
                         noise_seed: int | None = None, k_range: tuple[int, int] | None = None,
                         min_segment_size: int = 0, **plan_options: float) -> KMeansResult:
    """Federated DP k-means over ``matrices`` (one scaled matrix per partner), in process.

    ``rounds`` 0 plans :func:`fedprofile.config.default_rounds` of ``epsilon``;
    ``noise_seed`` seeds the partners' noise (None: OS entropy); ``k_range`` chooses k as
    ``--k auto`` does (``k`` is then its upper bound); ``plan_options`` go to
    :func:`fedprofile.server.kmeans.plan_kmeans`.
    """
    plan = plan_kmeans(epsilon=epsilon, delta=delta,
                       lloyd_rounds=rounds or default_rounds(epsilon),
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
        sum_mech = GaussianMechanism(sensitivity=spec.norm_bound,
                                     noise_multiplier=request.sum_noise_multiplier)
        count_mech = GaussianMechanism(sensitivity=1.0,
                                       noise_multiplier=request.count_noise_multiplier)
        replies = []
        for matrix in matrices:
            sums, counts = cluster_partials(matrix, request.centers)
            replies.append(KMeansReply(sums=sum_mech.randomise(sums, rng),
                                       counts=count_mech.randomise(counts, rng), events=()))
        stage.aggregate(rnd, replies)
    result = stage.finalize()
    return result


def run_response_inprocess(designs: Sequence[DesignData], *, task: str, epsilon: float,
                           norm_bound: float, target_bound: float, delta: float = 1e-6,
                           alpha: float = 1.0, rounds: int = 3,
                           noise_seed: int | None = None) -> RegressionResult:
    """Federated DP ridge or logistic regression over partners' design data, in process."""
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
        replies: list = []
        for d in designs:
            if isinstance(request, GramRequest):
                upper, xty = gram_statistics(d.z_train, d.y_train if request.with_target
                                             else None)
                gm = GaussianMechanism(sensitivity=norm_bound**2,
                                       noise_multiplier=request.gram_noise_multiplier)
                tm = GaussianMechanism(sensitivity=norm_bound * target_bound,
                                       noise_multiplier=request.target_noise_multiplier)
                replies.append(GramReply(gram_upper=gm.randomise(upper, rng),
                                         xty=tm.randomise(xty, rng), events=()))
            else:
                total = _logistic_gradient(d.z_train, d.y_train, request.theta, request.clip)
                mech = GaussianMechanism(sensitivity=request.clip,
                                         noise_multiplier=request.noise_multiplier)
                replies.append(GradientReply(gradient=mech.randomise(total, rng), events=()))
        stage.aggregate(rnd, replies)
    return stage.finalize()


def _logistic_gradient(z: np.ndarray, y: np.ndarray, theta: np.ndarray, clip: float
                       ) -> np.ndarray:
    """Clipped per-customer gradient sum in NumPy (the Opacus path gives the same numbers)."""
    per = (1.0 / (1.0 + np.exp(-(z @ theta))) - y)[:, None] * z
    norms = np.linalg.norm(per, axis=1)
    return np.minimum(1.0, clip / np.maximum(norms, 1e-12)) @ per
