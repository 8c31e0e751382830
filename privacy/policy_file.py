"""A partner's privacy policy: its limits and the TOML file that sets them.

Enforced by :class:`fedprofile.privacy.policy.PartnerGuard`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fedprofile.errors import ContractError
from fedprofile.privacy.overlap_limits import OVERLAP_KEYS, overlap_limits

__all__ = ["ALL_STAGES", "SIMULATION_POLICY", "PartnerPolicy", "load_policy"]

ALL_STAGES = ("profile", "kmeans", "ridge", "logistic", "score", "overlap", "lookalike")
_KEYS = {"max_epsilon_per_run", "total_epsilon", "delta", "min_segment_size", "allowed_stages",
         "allow_non_private", "max_candidate_centres", "min_secure_aggregation_partners",
         "min_secure_aggregation_dropouts", *OVERLAP_KEYS}


@dataclass(frozen=True)
class PartnerPolicy:
    """A partner's limits. The defaults are the policy of a node without a policy file.

    Parameters
    ----------
    max_epsilon_per_run : float, default=1.0
        Refuse a run whose epsilon at this partner would exceed it.
    total_epsilon : float, default=10.0
        Lifetime budget of this partner's data in this federation.
    delta : float, default=1e-6
        The delta at which this partner accounts; runs asking for a larger delta are refused.
    min_segment_size : int, default=50
        Smallest segment the partner accepts to see published.
    allowed_stages : tuple of str
        Stages the partner takes part in.
    allow_non_private : bool, default=False
        Whether non-private (epsilon = inf) runs are allowed.
    max_candidate_centres : int, default=4096
        Most centres one k-means request may carry (checked before anything is charged).
    min_secure_aggregation_partners : int, default=3
        Fewest partners a secure aggregation run (``noise = "secagg"``) may have for this
        partner to take part; 0 means it never takes part in one.
    min_secure_aggregation_dropouts : int, default=0
        Smallest declared ``t`` (``secagg-dropouts``: partners that may drop out or collude
        with the coordinator while the planned noise still holds) of a secure aggregation run
        this partner takes part in; a run declaring fewer is refused before any release.
    min_overlap_size, min_query_set_size, max_overlap_queries_per_day, min_seed_size : int
        Overlap and lookalike limits (see :mod:`fedprofile.privacy.overlap_limits`).
    """

    max_epsilon_per_run: float = 1.0
    total_epsilon: float = 10.0
    delta: float = 1e-6
    min_segment_size: int = 50
    allowed_stages: tuple[str, ...] = ALL_STAGES
    allow_non_private: bool = False
    max_candidate_centres: int = 4096
    min_secure_aggregation_partners: int = 3
    min_secure_aggregation_dropouts: int = 0
    min_overlap_size: int = 20
    min_query_set_size: int = 100
    max_overlap_queries_per_day: int = 3
    min_seed_size: int = 100
    source: str = field(default="default policy", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the policy as a JSON-compatible dict (infinite limits as None)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        return {k: None if isinstance(v, float) and math.isinf(v) else
                list(v) if isinstance(v, tuple) else v for k, v in out.items()}


SIMULATION_POLICY = PartnerPolicy(
    max_epsilon_per_run=math.inf, total_epsilon=math.inf, allow_non_private=True,
    max_overlap_queries_per_day=10**6, source="simulation policy (no limits)")
"""What simulated partners run without ``--policy``: the user's own test data, no limits.
A deployed node without a policy file runs ``PartnerPolicy()`` instead."""


def _positive(data: dict[str, Any], key: str, source: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ContractError(f"Policy {source}: {key!r} must be a number in (0, inf]. "
                            f"Got {value!r} instead.")
    return float(value)


def load_policy(path: str | Path) -> PartnerPolicy:
    """Read and validate a partner policy TOML file.

    Raises
    ------
    ContractError
        If the file is missing, not TOML, has unknown keys or invalid values.
    """
    p = Path(path)
    if not p.is_file():
        raise ContractError(f"Policy file {str(p)!r} does not exist.")
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"Policy file {str(p)!r} is not valid TOML: {exc}") from None
    source = str(p)
    unknown = set(data) - _KEYS
    if unknown:
        raise ContractError(f"Policy {source}: unknown key(s) {sorted(unknown)}; allowed: "
                            f"{sorted(_KEYS)}.")
    delta = _positive(data, "delta", source, 1e-6)
    if delta >= 1:
        raise ContractError(f"Policy {source}: 'delta' must be in (0, 1). Got {delta!r}.")
    stages = data.get("allowed_stages", list(ALL_STAGES))
    if not isinstance(stages, list) or not all(isinstance(x, str) for x in stages) \
            or not set(stages) <= set(ALL_STAGES):
        raise ContractError(f"Policy {source}: 'allowed_stages' must be a list drawn from "
                            f"{list(ALL_STAGES)}. Got {stages!r} instead.")
    min_size = data.get("min_segment_size", 50)
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ContractError(f"Policy {source}: 'min_segment_size' must be an integer >= 0. "
                            f"Got {min_size!r} instead.")
    allow = data.get("allow_non_private", False)
    if not isinstance(allow, bool):
        raise ContractError(f"Policy {source}: 'allow_non_private' must be true or false.")
    centres = data.get("max_candidate_centres", PartnerPolicy.max_candidate_centres)
    if isinstance(centres, bool) or not isinstance(centres, int) or centres < 1:
        raise ContractError(f"Policy {source}: 'max_candidate_centres' must be an integer >= 1."
                            f" Got {centres!r} instead.")
    secure = data.get("min_secure_aggregation_partners", 3)
    if isinstance(secure, bool) or not isinstance(secure, int) or secure in (1, 2) or secure < 0:
        raise ContractError(f"Policy {source}: 'min_secure_aggregation_partners' must be 0 "
                            f"(never) or an integer >= 3. Got {secure!r} instead.")
    tolerance = data.get("min_secure_aggregation_dropouts", 0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int) or tolerance < 0:
        raise ContractError(f"Policy {source}: 'min_secure_aggregation_dropouts' must be an "
                            f"integer >= 0. Got {tolerance!r} instead.")
    default = PartnerPolicy()
    return PartnerPolicy(max_epsilon_per_run=_positive(data, "max_epsilon_per_run", source,
                                                       default.max_epsilon_per_run),
                         total_epsilon=_positive(data, "total_epsilon", source,
                                                 default.total_epsilon),
                         delta=delta, min_segment_size=min_size, allowed_stages=tuple(stages),
                         allow_non_private=allow, max_candidate_centres=centres,
                         min_secure_aggregation_partners=secure,
                         min_secure_aggregation_dropouts=tolerance, source=source,
                         **overlap_limits(data, source))
