"""Validated values of the flat run and node config dicts (shared by both parsers)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from fedprofile.errors import ContractError

__all__ = ["config_float", "config_int", "config_str"]


def _value(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    return cfg.get(key, default)


def _int(cfg: Mapping[str, Any], key: str, default: int, *, low: int, high: int | None = None
         ) -> int:
    value = _value(cfg, key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < low or \
            (high is not None and value > high):
        rng = f"[{low}, {high}]" if high is not None else f"[{low}, inf)"
        raise ContractError(f"The {key!r} parameter must be an int in the range {rng}. "
                            f"Got {value!r} instead.")
    return value


def _float(cfg: Mapping[str, Any], key: str, default: float, *, open_low: float,
           high: float = math.inf, allow_inf: bool = False) -> float:
    value = _value(cfg, key, default)
    if isinstance(value, str) and value.strip().lower() in ("inf", "infinity") and allow_inf:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise ContractError(f"The {key!r} parameter must be a number. Got {value!r} instead.")
    value = float(value)
    if math.isinf(value) and allow_inf and value > 0:
        return value
    if not (open_low < value < high or (value == high and math.isfinite(high))):
        raise ContractError(f"The {key!r} parameter must be a float in the range "
                            f"({open_low:g}, {high:g}{']' if math.isfinite(high) else ')'}. "
                            f"Got {value!r} instead.")
    return value


def _str(cfg: Mapping[str, Any], key: str, default: str) -> str:
    value = _value(cfg, key, default)
    if not isinstance(value, str):
        raise ContractError(f"The {key!r} parameter must be a string. Got {value!r} instead.")
    return value


config_int, config_float, config_str = _int, _float, _str
