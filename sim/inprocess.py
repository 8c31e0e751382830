"""The k-means protocol run in one process with plain NumPy, without Flower.

The same stage object and the same partner computation (partials, mechanisms) as the
Flower apps, with the message passing replaced by function calls. It is the reference for
the framework's overhead in benchmarks, and the fast path for exactness tests and tuning.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np

from client.statistics import cluster_partials
from fedprofile.contract import FeatureSpec
from fedprofile.protocol import KMeansReply
from privacy.mechanisms import GaussianMechanism
from server.kmeans import KMeansResult, KMeansStage, default_candidates, plan_kmeans

__all__ = ["run_kmeans_inprocess"]


def run_kmeans_inprocess(matrices: Sequence[np.ndarray], spec: FeatureSpec, *, k: int,
                         epsilon: float, delta: float = 1e-6, rounds: int = 3,
                         init: str = "overcluster", candidates: int = 0, seed: int = 0,
                         initial_centers: np.ndarray | None = None,
                         noise_seed: int | None = None, **plan_options: float) -> KMeansResult:
    """Federated DP k-means over ``matrices`` (one scaled matrix per partner), in process.

    ``noise_seed`` seeds the partners' noise (None: OS entropy); ``plan_options`` go to
    :func:`server.kmeans.plan_kmeans`.
    """
    plan = plan_kmeans(epsilon=epsilon, delta=delta, lloyd_rounds=rounds,
                       norm_bound=spec.norm_bound, init=init, **plan_options)  # type: ignore[arg-type]
    stage = KMeansStage(spec=spec, plan=plan, k=k, n_partners=len(matrices),
                        run_id=uuid.uuid4().hex[:16], fingerprint=spec.fingerprint(),
                        candidates=candidates or default_candidates(k, spec.dim), seed=seed,
                        initial_centers=initial_centers)
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
