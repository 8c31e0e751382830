"""Response targets: clipping, transforming and scaling by the contract's public bounds.

Numeric targets are clipped to their bounds, transformed, and scaled to ``[-1/2, 1/2]``
(so ``|y| <= TARGET_BOUND``); binary targets are 1 where the value equals ``positive``,
compared as text without regard to case or surrounding spaces (``"yes"`` matches ``Yes``, and
``"TRUE"`` matches a column pandas read as booleans), or as numbers when ``positive`` is one.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from fedprofile.contract.spec import NumericFeature, TargetSpec
from fedprofile.errors import ContractError, DataError

__all__ = ["TARGET_BOUND", "binary_labels", "holdout_mask", "target_column", "target_vector",
           "unscale_target"]

TARGET_BOUND = 0.5


def _as_feature(target: TargetSpec) -> NumericFeature:
    return NumericFeature(name=target.name, bounds=target.bounds, transform=target.transform)


def target_column(target: TargetSpec, mapping: Mapping[str, str] | None = None) -> str:
    """The partner's column holding ``target`` (its mapping, else the declared column)."""
    return (mapping or {}).get(target.name, target.column or target.name)


def binary_labels(values: pd.Series, positive: object) -> pd.Series:
    """Which values mean the positive class (a boolean Series; missing values are False).

    A numeric ``positive`` (not a boolean) is compared as a number; anything else as text,
    case-insensitively and without surrounding spaces, so the declared ``"yes"`` matches
    ``Yes`` and ``"TRUE"`` or ``true`` match a column read as booleans.
    """
    if isinstance(positive, int | float) and not isinstance(positive, bool):
        return pd.to_numeric(values, errors="coerce") == float(positive)
    folded = values.astype(str).str.strip().str.casefold()
    return values.notna() & (folded == str(positive).strip().casefold())


def target_vector(frame: pd.DataFrame, target: TargetSpec, *,
                  mapping: Mapping[str, str] | None = None,
                  source: str = "partner table") -> tuple[np.ndarray, np.ndarray]:
    """The scaled target of every row and which rows have a valid value.

    Raises
    ------
    DataError
        If the target column is missing, a numeric target holds no numbers, or every value
        of a binary target is missing.
    """
    column = target_column(target, mapping)
    if column not in frame.columns:
        raise DataError(f"{source}: missing target column {column!r} (target {target.name!r}).")
    values = frame[column]
    if target.kind == "binary":
        valid = values.notna().to_numpy()
        if not valid.any():
            raise DataError(f"{source}: target {target.name!r} has no values.")
        return binary_labels(values, target.positive).to_numpy(dtype=float), valid
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, copy=True)
    valid = np.isfinite(numbers)
    if len(numbers) and not valid[values.notna().to_numpy()].any():
        raise DataError(f"{source}: target column {column!r} holds no numeric values; is it "
                        "the right column, or the right type?")
    scaled = _as_feature(target).scale(np.where(valid, numbers, target.bounds[0]))
    return scaled, valid


def unscale_target(scaled: np.ndarray, target: TargetSpec) -> np.ndarray:
    """Map scaled predictions back to the target's original units."""
    if target.kind != "numeric":
        raise ContractError(f"Target {target.name!r} is binary; it has no original units.")
    return _as_feature(target).unscale(np.asarray(scaled, dtype=float))


def holdout_mask(n: int, *, fraction: float, seed: int) -> np.ndarray:
    """Which of ``n`` customers a partner keeps aside for testing (never used in training).

    A seeded, data-independent draw: the same table, fraction and seed give the same split.
    """
    if not 0.0 <= fraction < 1.0:
        raise ContractError(f"The 'holdout' parameter must be in [0, 1). Got {fraction!r}.")
    return np.random.default_rng([seed, n]).random(n) < fraction
