"""The design matrix of response models, built identically at every partner.

``Z = [x, segment one-hot (optional), 1]`` for each customer with a valid target; a seeded,
data-independent share of customers is held out for testing and never used in training.
Each row has L2 norm at most ``sqrt(B**2 + [1 if segments] + 1)``, declared by the contract.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedprofile.contract.features import transform_frame
from fedprofile.contract.spec import CategoricalFeature, FeatureSpec, NumericFeature
from fedprofile.contract.targets import TARGET_BOUND, holdout_mask, target_vector
from fedprofile.errors import ContractError, DataError

__all__ = ["DesignData", "design_data", "design_names", "design_norm_bound", "feature_mask",
           "onehot_weights", "target_bound", "unsupported_columns"]


def feature_mask(spec: FeatureSpec, target: str) -> np.ndarray:
    """Scaled coordinates used as predictors.

    A feature read from the target's own column (``balance`` predicting ``balance``) is
    left out.
    """
    column = spec.targets[target].column or target
    keep = [(f.column or f.name) != column for f in spec.features for _ in range(f.width)]
    return np.asarray(keep, dtype=bool)


def design_norm_bound(spec: FeatureSpec, target: str, *, segment_aware: bool) -> float:
    """Public bound on the L2 norm of a design row."""
    squares = []
    for f in spec.features:
        if (f.column or f.name) == (spec.targets[target].column or target):
            continue
        squares.append(f.weight**2 / 4 if isinstance(f, NumericFeature) else f.weight**2)
    return math.sqrt(sum(squares) + (1.0 if segment_aware else 0.0) + 1.0)


def target_bound(spec: FeatureSpec, target: str) -> float:
    """Public bound on ``|y|`` of a target: 1/2 for scaled numeric targets, 1 for binary."""
    return 1.0 if spec.targets[target].kind == "binary" else TARGET_BOUND


def design_names(spec: FeatureSpec, target: str, n_segments: int) -> list[str]:
    """Names of the design columns."""
    slots = [n for n, keep in zip(spec.slot_names, feature_mask(spec, target), strict=True)
             if keep]
    return [*slots, *(f"segment={j}" for j in range(n_segments)), "intercept"]


def onehot_weights(spec: FeatureSpec, target: str, n_segments: int) -> np.ndarray:
    """Per design column: the one-hot value ``w`` of a category or segment slot, else 0."""
    weights = [f.weight if isinstance(f, CategoricalFeature) else 0.0
               for f in spec.features for _ in range(f.width)]
    slots = np.asarray(weights, dtype=float)[feature_mask(spec, target)]
    return np.r_[slots, np.ones(n_segments), 0.0]


def unsupported_columns(spec: FeatureSpec, target: str, n_segments: int,
                        gram_diagonal: np.ndarray | None, noise_sd: float) -> list[str]:
    """One-hot design columns that no customer (distinguishably from noise) holds.

    The diagonal of ``Z'Z`` at a one-hot slot of value ``w`` is ``w**2`` times the number of
    customers holding it; a slot whose noisy diagonal is at most two noise standard
    deviations (exactly zero without noise) has no support, so its coefficient is only
    the penalty's and the noise's and says nothing about customers. Post-processing of
    the released Gram matrix: it costs no privacy.
    """
    if gram_diagonal is None:
        return []
    weights = onehot_weights(spec, target, n_segments)
    names = design_names(spec, target, n_segments)
    diagonal = np.asarray(gram_diagonal, dtype=float)
    return [name for name, w, d in zip(names, weights, diagonal, strict=True)
            if w > 0 and d <= 2.0 * noise_sd]


@dataclass(frozen=True)
class DesignData:
    """A partner's training and test design rows and targets (they never leave it)."""

    z_train: np.ndarray
    y_train: np.ndarray
    z_test: np.ndarray
    y_test: np.ndarray


def design_data(table: pd.DataFrame, spec: FeatureSpec, target: str, *,
                segment_centers: np.ndarray | None, holdout: float, seed: int,
                mapping: Mapping[str, str] | None = None,
                source: str = "partner table") -> DesignData:
    """Build the design rows of one partner's customer table.

    Raises
    ------
    ContractError
        If ``target`` is not declared in the contract.
    DataError
        If the target column is missing or invalid, or no training customer is left.
    """
    if target not in spec.targets:
        raise ContractError(f"Target {target!r} is not declared in the spec {spec.source}; "
                            f"declared: {sorted(spec.targets) or 'none'}.")
    fm = transform_frame(table, spec, mapping=mapping, source=source)
    y_all, valid = target_vector(table, spec.targets[target], mapping=mapping, source=source)
    x, y, valid = fm.matrix, y_all[fm.keep], valid[fm.keep]
    blocks = [np.asarray(x, dtype=float)[:, feature_mask(spec, target)]]
    if segment_centers is not None and segment_centers.size:
        from fedprofile.contract.assignment import assign

        onehot = np.zeros((len(x), len(segment_centers)))
        onehot[np.arange(len(x)), assign(np.asarray(x), segment_centers)] = 1.0
        blocks.append(onehot)
    blocks.append(np.ones((len(x), 1)))
    z = np.hstack(blocks)[valid]
    y = y[valid]
    test = holdout_mask(len(z), fraction=holdout, seed=seed)
    if (~test).sum() == 0:
        raise DataError(f"{source}: no customer with a valid target {target!r} is left for "
                        "training.")
    return DesignData(z_train=z[~test], y_train=y[~test], z_test=z[test], y_test=y[test])
