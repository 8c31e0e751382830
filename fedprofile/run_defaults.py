"""What a run plans when its config leaves a k-means setting at 0: from public values only.

Both depend on the announced budget, the noise placement and the contract, never on data,
so the plan is fixed before any release.
"""

from __future__ import annotations

import math

from fedprofile.privacy.accounting import gdp_mu

__all__ = ["NON_PRIVATE_ROUNDS", "SECAGG_MIN_PARTNERS", "SECAGG_ROUND_STEPS", "SECAGG_TASKS",
           "default_candidates", "default_noise", "default_rounds", "sum_mu"]

NON_PRIVATE_ROUNDS = 20
"""Lloyd rounds of a run without noise (epsilon = inf), where a round costs no budget."""

SECAGG_ROUND_STEPS = ((0.2, 5), (0.6, 8))
"""Under secure aggregation: (least :func:`sum_mu`, Lloyd rounds), 3 below the first step."""


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


def sum_mu(epsilon: float, delta: float, *, partners: int = 0, dropouts: int = 0) -> float:
    """The GDP budget of the noise one securely summed release carries, from public values.

    Each of ``m`` partners adds a share of variance ``sigma**2 / (m - t)`` so that ``m - t``
    shares reach the planned noise; with all ``m`` present the sum carries
    ``m / (m - t)`` times it, as if the run had ``mu * sqrt((m - t) / m)``. ``partners``
    at 0 (not known yet) takes the fewest a run with ``t`` dropouts accepts, ``t + 2``.
    """
    m = max(partners, dropouts + 2)
    return gdp_mu(epsilon, delta) * math.sqrt((m - dropouts) / m)


def default_rounds(epsilon: float, *, delta: float = 1e-6, noise: str = "partner",
                   partners: int = 0, dropouts: int = 0) -> int:
    """Lloyd rounds when the run config leaves them at 0, from public values only.

    ``partner`` noise: from ε alone, 3 below ε = 3, 5 from ε = 3, 8 from ε = 8. Every round
    shares the budget, so more rounds mean more noise in each; these steps measured best
    (``fedprofile bench utility --rounds``) on retail (6 partners), the smallest shipped
    federation, where noise weighs most. ``secagg``: every sum carries one noise draw
    instead of one per partner, so the same ε affords more rounds; they are planned from
    :func:`sum_mu` (ε, δ, the partners and the declared dropouts): 3 below 0.2, 5 from 0.2
    (ε ≈ 0.85 without dropouts), 8 from 0.6 (:data:`SECAGG_ROUND_STEPS`; measured on retail
    k = 4–8, bank and synthetic mixtures, BENCHMARKS.md). Without noise rounds are free and
    20 reach the centralized cost. The plan is fixed before any release.
    """
    if math.isinf(epsilon):
        return NON_PRIVATE_ROUNDS
    if noise == "secagg":
        mu = sum_mu(epsilon, delta, partners=partners, dropouts=dropouts)
        return max([3] + [rounds for least, rounds in SECAGG_ROUND_STEPS if mu >= least])
    return 3 if epsilon < 3 else 5 if epsilon < 8 else 8


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
