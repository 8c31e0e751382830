"""What a run plans when its config leaves a k-means setting at 0: from public values only.

Both depend on the announced budget and the contract, never on data, so the plan is fixed
before any release.
"""

from __future__ import annotations

import math

__all__ = ["NON_PRIVATE_ROUNDS", "default_candidates", "default_rounds"]

NON_PRIVATE_ROUNDS = 20
"""Lloyd rounds of a run without noise (epsilon = inf), where a round costs no budget."""


def default_rounds(epsilon: float) -> int:
    """Lloyd rounds when the run config leaves them at 0, from the run's epsilon alone.

    3 below ε = 3, 5 from ε = 3, 8 from ε = 8 and 20 at ε = inf. Every round shares the
    budget, so more rounds mean more noise in each; these steps measured best (``fedprofile
    bench utility --rounds``) on retail, the smallest shipped federation, where noise weighs
    most; on larger ones more rounds only help sooner. Without noise rounds are free and 20
    reach the centralized cost. The plan depends only on the announced budget, so it is
    fixed before any release.
    """
    if math.isinf(epsilon):
        return NON_PRIVATE_ROUNDS
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
