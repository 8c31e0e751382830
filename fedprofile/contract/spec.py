"""The feature contract: a federation's declared features with public bounds.

The contract is a TOML file shared by the coordinator and every partner. It fixes how a
partner's columns become the scaled vector each customer contributes, and so the maximal
L2 norm of that vector, which is the sensitivity of every sum released from it. Nothing in
the transformation is learned from data: bounds, categories and defaults are declared.

Scaled space
------------
* numeric feature: clip to ``bounds``, apply the optional monotone ``transform``, map the
  (transformed) bounds linearly onto ``[-weight/2, +weight/2]``;
* categorical feature: one-hot over the declared categories (plus an ``other`` slot when
  ``other = true``), each slot worth ``weight``.

The norm of a scaled vector is therefore at most
``sqrt(sum(w**2 / 4 for numerics) + sum(w**2 for categoricals))`` (:attr:`FeatureSpec.norm_bound`).

Missing values follow the feature's declared rule: ``missing = "drop"`` drops the customer
(default) and ``missing = "impute"`` uses the declared public ``default``.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from fedprofile.contract.aggregation import CustomerAggregation, IdentitySpec
from fedprofile.errors import ContractError

__all__ = [
    "CategoricalFeature",
    "FeatureSpec",
    "NumericFeature",
    "TargetSpec",
]

Transform = Literal["none", "log1p", "signed_log1p"]
MissingRule = Literal["drop", "impute"]
TRANSFORMS: tuple[str, ...] = ("none", "log1p", "signed_log1p")
MISSING_RULES: tuple[str, ...] = ("drop", "impute")
OTHER = "(other)"


def _apply_transform(x: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        return np.log1p(x)
    if transform == "signed_log1p":
        return np.sign(x) * np.log1p(np.abs(x))
    return x


def _invert_transform(y: np.ndarray, transform: str) -> np.ndarray:
    if transform == "log1p":
        return np.expm1(y)
    if transform == "signed_log1p":
        return np.sign(y) * np.expm1(np.abs(y))
    return y


@dataclass(frozen=True, slots=True)
class NumericFeature:
    """A numeric feature with public bounds.

    Parameters
    ----------
    name : str
        Feature name in the contract.
    bounds : tuple of float
        Public ``(low, high)`` with ``low < high``; values are clipped into it.
    transform : {"none", "log1p", "signed_log1p"}, default="none"
        Monotone transform applied after clipping and before scaling.
    missing : {"drop", "impute"}, default="drop"
        What happens to a customer whose value is missing or unparseable.
    default : float or None
        Public value imputed when ``missing="impute"``.
    weight : float, default=1.0
        Relative weight of the feature in the distance, in ``(0, inf)``.
    column : str
        Source column name (defaults to ``name``).
    """

    name: str
    bounds: tuple[float, float]
    transform: Transform = "none"
    missing: MissingRule = "drop"
    default: float | None = None
    weight: float = 1.0
    column: str = ""
    kind: Literal["numeric"] = "numeric"

    @property
    def width(self) -> int:
        """Number of scaled coordinates (always 1)."""
        return 1

    @property
    def slot_names(self) -> list[str]:
        """Names of the scaled coordinates."""
        return [self.name]

    def _transformed_bounds(self) -> tuple[float, float]:
        lo, hi = _apply_transform(np.asarray(self.bounds, dtype=float), self.transform)
        return float(lo), float(hi)

    def scale(self, values: np.ndarray) -> np.ndarray:
        """Clip, transform and scale raw values into ``[-weight/2, weight/2]``."""
        lo, hi = self._transformed_bounds()
        t = _apply_transform(np.clip(values, *self.bounds), self.transform)
        return ((t - lo) / (hi - lo) - 0.5) * self.weight

    def unscale(self, scaled: np.ndarray) -> np.ndarray:
        """Map scaled coordinates back to original units (inverse transform of the mean)."""
        lo, hi = self._transformed_bounds()
        t = (np.clip(scaled / self.weight, -0.5, 0.5) + 0.5) * (hi - lo) + lo
        return _invert_transform(t, self.transform)

    def to_dict(self) -> dict[str, Any]:
        """Return the TOML-compatible declaration of this feature."""
        d: dict[str, Any] = {"kind": "numeric", "bounds": list(self.bounds),
                             "transform": self.transform, "missing": self.missing,
                             "weight": self.weight, "column": self.column}
        if self.default is not None:
            d["default"] = self.default
        return d


@dataclass(frozen=True, slots=True)
class CategoricalFeature:
    """A categorical feature with declared categories.

    Parameters
    ----------
    name : str
        Feature name in the contract.
    categories : tuple of str
        Declared categories, at least one, no duplicates.
    other : bool, default=True
        Whether undeclared values go to an ``other`` slot; if false they count as missing.
    missing : {"drop", "impute"}, default="drop"
        What happens to a customer whose value is missing.
    default : str or None
        Declared category (or ``"other"``) imputed when ``missing="impute"``.
    weight : float, default=1.0
        Value of the active one-hot slot, in ``(0, inf)``.
    column : str
        Source column name (defaults to ``name``).
    """

    name: str
    categories: tuple[str, ...]
    other: bool = True
    missing: MissingRule = "drop"
    default: str | None = None
    weight: float = 1.0
    column: str = ""
    kind: Literal["categorical"] = "categorical"

    @property
    def levels(self) -> tuple[str, ...]:
        """Categories with the ``other`` slot last when enabled."""
        return (*self.categories, OTHER) if self.other else self.categories

    @property
    def width(self) -> int:
        """Number of scaled coordinates (one per level)."""
        return len(self.levels)

    @property
    def slot_names(self) -> list[str]:
        """Names of the scaled coordinates, ``feature=level``."""
        return [f"{self.name}={level}" for level in self.levels]

    def to_dict(self) -> dict[str, Any]:
        """Return the TOML-compatible declaration of this feature."""
        d: dict[str, Any] = {"kind": "categorical", "categories": list(self.categories),
                             "other": self.other, "missing": self.missing,
                             "weight": self.weight, "column": self.column}
        if self.default is not None:
            d["default"] = self.default
        return d


Feature = NumericFeature | CategoricalFeature


@dataclass(frozen=True, slots=True)
class TargetSpec:
    """A response target for regression stages, with public bounds.

    ``kind="numeric"`` targets are clipped to ``bounds`` and optionally transformed;
    ``kind="binary"`` targets are 1 where the value equals ``positive``.
    """

    name: str
    kind: Literal["numeric", "binary"]
    bounds: tuple[float, float] = (0.0, 1.0)
    transform: Transform = "none"
    positive: str | int | float | bool | None = None
    column: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the TOML-compatible declaration of this target."""
        d: dict[str, Any] = {"kind": self.kind, "bounds": list(self.bounds),
                             "transform": self.transform, "column": self.column}
        if self.positive is not None:
            d["positive"] = self.positive
        return d


@dataclass(frozen=True)
class FeatureSpec:
    """A federation's feature contract (DESIGN §4).

    Attributes
    ----------
    name : str
        Federation name.
    features : tuple of NumericFeature or CategoricalFeature
        Features in declaration order; this order fixes the scaled coordinates.
    targets : dict of str to TargetSpec
        Declared response targets.
    identity : IdentitySpec or None
        Identity columns (e-mail, phone) that are pseudonymised at the partner.
    customers : CustomerAggregation or None
        How a partner's rows (e.g. transactions) become one row per customer.
    source : str
        Where the spec was read from (for error messages).
    """

    name: str
    features: tuple[Feature, ...]
    targets: dict[str, TargetSpec] = field(default_factory=dict)
    identity: IdentitySpec | None = None
    customers: CustomerAggregation | None = None
    description: str = ""
    source: str = "<spec>"

    @property
    def slot_names(self) -> list[str]:
        """Names of all scaled coordinates in order."""
        return [s for f in self.features for s in f.slot_names]

    @property
    def dim(self) -> int:
        """Dimension of the scaled vector."""
        return sum(f.width for f in self.features)

    @property
    def norm_bound(self) -> float:
        """Public maximal L2 norm of a scaled customer vector (the sum sensitivity)."""
        sq = sum(f.weight**2 / 4 if isinstance(f, NumericFeature) else f.weight**2
                 for f in self.features)
        return math.sqrt(sq)

    def slices(self) -> dict[str, slice]:
        """Scaled-coordinate slice of each feature."""
        out, start = {}, 0
        for f in self.features:
            out[f.name] = slice(start, start + f.width)
            start += f.width
        return out

    def box(self) -> tuple[np.ndarray, np.ndarray]:
        """Public per-coordinate bounds ``(low, high)`` of the scaled space."""
        lo, hi = [], []
        for f in self.features:
            if isinstance(f, NumericFeature):
                lo.append(-f.weight / 2)
                hi.append(f.weight / 2)
            else:
                lo.extend([0.0] * f.width)
                hi.extend([f.weight] * f.width)
        return np.asarray(lo), np.asarray(hi)

    def feature(self, name: str) -> Feature:
        """Return the feature called ``name``."""
        for f in self.features:
            if f.name == name:
                return f
        raise ContractError(f"The spec {self.source} has no feature {name!r}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a TOML/JSON-compatible dict (round-trips through `from_dict`)."""
        d: dict[str, Any] = {"federation": {"name": self.name, "description": self.description},
                             "features": {f.name: f.to_dict() for f in self.features}}
        if self.targets:
            d["target"] = {t.name: t.to_dict() for t in self.targets.values()}
        if self.identity is not None:
            d["identity"] = self.identity.to_dict()
        if self.customers is not None:
            d["customers"] = self.customers.to_dict()
        return d

    def fingerprint(self) -> str:
        """Stable SHA-256 of the canonical spec, used to check partners agree on it."""
        doc = self.to_dict()
        doc["slot_order"] = self.slot_names  # the order fixes the layout of every vector
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
