"""The clean-room keys of a partner policy file (overlap and lookalike) and their validation.

``min_overlap_size`` (20): smallest overlap count published; ``min_query_set_size`` (100):
smallest set either side may submit; ``max_overlap_queries_per_day`` (3): overlap queries
with the same counterpart per UTC day; ``min_seed_size`` (100): smallest seed audience the
partner accepts to be the seed owner of a lookalike run.
"""

from __future__ import annotations

from typing import Any

from fedprofile.errors import ContractError

__all__ = ["OVERLAP_KEYS", "overlap_limits"]

_DEFAULTS = {"min_overlap_size": 20, "min_query_set_size": 100,
             "max_overlap_queries_per_day": 3, "min_seed_size": 100}
OVERLAP_KEYS = tuple(_DEFAULTS)


def overlap_limits(data: dict[str, Any], source: str) -> dict[str, int]:
    """The overlap limits of a parsed policy file (defaults for missing keys).

    Raises
    ------
    ContractError
        If a value is not an integer (>= 0 for the overlap size, else >= 1).
    """
    out = {}
    for key, default in _DEFAULTS.items():
        value = data.get(key, default)
        low = 0 if key == "min_overlap_size" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ContractError(f"Policy {source}: {key!r} must be an integer >= {low}. "
                                f"Got {value!r} instead.")
        out[key] = value
    return out
