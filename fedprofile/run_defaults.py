"""What a run plans when its config leaves a k-means setting at 0: from public values only.

Both depend on the announced budget, the noise placement and the contract, never on data,
so the plan is fixed before any release.
"""

from __future__ import annotations

import math

from fedprofile.privacy.accounting import gdp_mu
from fedprofile.privacy.secagg.plan import fewest_secure_partners

__all__ = ["NON_PRIVATE_ROUNDS", "ROUND_STEPS", "SECAGG_MIN_PARTNERS", "SECAGG_TASKS",
           "default_candidates", "default_noise", "default_rounds", "sum_mu"]

NON_PRIVATE_ROUNDS = 20
"""Lloyd rounds of a run without noise (epsilon = inf), where a round costs no budget."""

ROUND_STEPS = ((0.07, 8), (0.11, 12))
"""(least GDP budget of one summed release, :func:`sum_mu`; Lloyd rounds), 5 below the first."""


SECAGG_MIN_PARTNERS = 3
"""Fewest partners a run plans for before ``noise = "auto"`` chooses secure aggregation."""

SECAGG_TASKS = ("segments", "ridge", "logistic", "pipeline")
"""Tasks whose releases are sums, which secure aggregation can add up."""


def default_noise(task: str, epsilon: float, partners: int) -> str:
    """Where ``noise = "auto"`` adds the noise, from public values only.

    ``secagg`` (each partner adds a share; the coordinator sees only secure sums) for a
    private run of a task that releases sums and plans for at least
    :data:`SECAGG_MIN_PARTNERS` partners (``expected_partners`` or ``min_partners``);
    otherwise ``partner``. A run without noise has none to share and stays exact.
    """
    secure = (task in SECAGG_TASKS and math.isfinite(epsilon)
              and partners >= SECAGG_MIN_PARTNERS)
    return "secagg" if secure else "partner"


def sum_mu(epsilon: float, delta: float, *, partners: int = 0, dropouts: int = 0,
           noise: str = "secagg") -> float:
    """The GDP budget of the noise one summed release carries, from public values.

    ``secagg``: each of ``m`` partners adds a share of variance ``sigma**2 / (m - t)`` so
    that ``m - t`` shares reach the planned noise; with all ``m`` present the sum carries
    ``m / (m - t)`` times it, as if the run had ``mu * sqrt((m - t) / m)``. ``partner``:
    each partner adds the whole noise, so the sum carries ``m`` draws, ``mu / sqrt(m)``.
    ``partners`` at 0 (not known yet) takes the fewest a secure run accepts
    (:func:`fedprofile.privacy.secagg.plan.fewest_secure_partners`).
    """
    m = max(partners, fewest_secure_partners(dropouts))
    if noise == "secagg":
        return gdp_mu(epsilon, delta) * math.sqrt((m - dropouts) / m)
    return gdp_mu(epsilon, delta) / math.sqrt(m)


def default_rounds(epsilon: float, *, delta: float = 1e-6, noise: str = "partner",
                   partners: int = 0, dropouts: int = 0) -> int:
    """Lloyd rounds when the run config leaves them at 0, from public values only.

    Planned from the budget of one summed release (:func:`sum_mu` of ε, δ, the placement,
    the partners and the declared dropouts): 5 rounds below 0.07, 8 from 0.07, 12 from
    0.11 (:data:`ROUND_STEPS`). A private round releases each centre's displacement, clipped
    to a radius near the segments' spread (:mod:`fedprofile.server.kmeans`), so more rounds
    pay while a sum's noise is small against that spread; with the least budget the noise
    of each round weighs most and fewer rounds win (measured on retail, the smallest
    shipped federation, on bank and hillstrom, and on synthetic mixtures; BENCHMARKS.md).
    Without noise rounds are free and 20 reach the centralized cost. The plan is fixed
    before any release.
    """
    if math.isinf(epsilon):
        return NON_PRIVATE_ROUNDS
    mu = sum_mu(epsilon, delta, partners=partners, dropouts=dropouts, noise=noise)
    return max([5] + [rounds for least, rounds in ROUND_STEPS if mu >= least])


def default_candidates(k: int, dim: int, *, private: bool = True) -> int:
    """Candidates of the over-clustering start: ``max(12 * k, 5 * dim)``, or 1,000 if more.

    The floor of 1,000 holds only when not ``private``.

    A heuristic measured on the shipped data sets (``fedprofile bench utility``): more
    candidates cover the public box better, but each must keep enough customers to clear
    the count noise; without noise a finer summary only helps. It depends only on public
    parameters.
    """
    base = max(12 * k, 5 * dim)
    return base if private else max(base, 1000)
