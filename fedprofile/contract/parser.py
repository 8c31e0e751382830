"""Parsing and validating the feature contract's TOML form (see :mod:`fedprofile.contract.spec`)."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, cast

from fedprofile.contract.aggregation import parse_customers, parse_identity
from fedprofile.contract.spec import (
    MISSING_RULES,
    OTHER,
    TRANSFORMS,
    CategoricalFeature,
    Feature,
    FeatureSpec,
    MissingRule,
    NumericFeature,
    TargetSpec,
    Transform,
)
from fedprofile.contract.suggest import closest
from fedprofile.errors import ContractError
from fedprofile.resources import contract_path

__all__ = ["load_spec", "parse_spec"]

_NUMERIC_KEYS = {"kind", "bounds", "transform", "missing", "default", "weight", "column"}
_CATEGORICAL_KEYS = {"kind", "categories", "other", "missing", "default", "weight", "column"}
_SECTIONS = {"federation", "features", "target", "identity", "customers"}


def load_spec(path: str | Path) -> FeatureSpec:
    """Read and validate a feature contract from a TOML file, or a shipped one by name.

    ``path`` is a file; when no such file exists, a shipped contract of that name
    (``bank``, ``bank.toml`` or ``specs/bank.toml``) is read instead.

    Raises
    ------
    ContractError
        If the file is missing, is not valid TOML, or declares an invalid feature.
    """
    p = Path(path)
    if not p.is_file():
        shipped = contract_path(str(path))
        if shipped is None:
            raise ContractError(f"Spec file {str(p)!r} does not exist.")
        p = shipped
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"Spec file {str(p)!r} is not valid TOML: {exc}") from None
    return parse_spec(data, str(p))


def _err(source: str, where: str, problem: str) -> ContractError:
    return ContractError(f"Spec {source}: {where}: {problem}")


def _unknown(names: set[str], allowed: set[str] | tuple[str, ...]) -> str:
    """``['Bounds'] (did you mean 'bounds'?)``: the unknown names, with close allowed ones."""
    hints = [f"{name!r}: did you mean {match!r}?" for name in sorted(names)
             if (match := closest(name, allowed)) is not None]
    return f"{sorted(names)}" + (f" ({'; '.join(hints)})" if hints else "")


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> FeatureSpec:
    """Build and validate a :class:`FeatureSpec` from its dict form."""
    unknown = set(data) - _SECTIONS
    if unknown:
        raise _err(source, "top level", f"unknown section(s) {_unknown(unknown, _SECTIONS)}; "
                   f"allowed: {', '.join(sorted(_SECTIONS))}.")
    fed = data.get("federation", {})
    raw_features = data.get("features")
    if not isinstance(raw_features, dict) or not raw_features:
        raise _err(source, "[features]", "declare at least one feature, e.g. [features.age].")
    features = tuple(_parse_feature(name, decl, source) for name, decl in raw_features.items())
    targets = {name: _parse_target(name, decl, source)
               for name, decl in data.get("target", {}).items()}
    identity = parse_identity(data["identity"], source) if "identity" in data else None
    customers = parse_customers(data["customers"], source) if "customers" in data else None
    return FeatureSpec(name=str(fed.get("name", Path(source).stem)), features=features,
                       targets=targets, identity=identity, customers=customers,
                       description=str(fed.get("description", "")), source=source)


def _number(value: Any, source: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _err(source, where, f"must be a finite number. Got {value!r} instead.")
    return float(value)


def _common(name: str, decl: dict[str, Any], source: str) -> tuple[MissingRule, str, float]:
    where = f"[features.{name}]"
    missing = decl.get("missing", "drop")
    if missing not in MISSING_RULES:
        raise _err(source, where, f"'missing' must be one of {list(MISSING_RULES)}. "
                   f"Got {missing!r} instead.")
    if missing == "impute" and "default" not in decl:
        raise _err(source, where, "missing = \"impute\" needs a public 'default' value.")
    weight = _number(decl.get("weight", 1.0), source, f"{where} weight")
    if weight <= 0:
        raise _err(source, where, f"'weight' must be in (0, inf). Got {weight!r} instead.")
    column = decl.get("column", name)
    if not isinstance(column, str) or not column:
        raise _err(source, where, f"'column' must be a non-empty string. Got {column!r}.")
    return cast(MissingRule, missing), column, weight


def _parse_bounds(decl: dict[str, Any], source: str, where: str) -> tuple[float, float]:
    bounds = decl.get("bounds")
    if not isinstance(bounds, list) or len(bounds) != 2:
        raise _err(source, where, "'bounds' must be a list [low, high] of public bounds.")
    lo, hi = (_number(b, source, f"{where} bounds") for b in bounds)
    if not lo < hi:
        raise _err(source, where, f"'bounds' must satisfy low < high. Got [{lo}, {hi}]; "
                   "are they reversed?")
    return lo, hi


def _parse_transform(decl: dict[str, Any], bounds: tuple[float, float], source: str,
                     where: str) -> Transform:
    transform = decl.get("transform", "none")
    if transform not in TRANSFORMS:
        raise _err(source, where, f"'transform' must be one of {list(TRANSFORMS)}. "
                   f"Got {transform!r} instead.")
    if transform == "log1p" and bounds[0] < 0:
        raise _err(source, where, "transform \"log1p\" needs a lower bound >= 0; "
                   "use \"signed_log1p\" for values that can be negative.")
    return cast(Transform, transform)  # checked against TRANSFORMS above


def _parse_feature(name: str, decl: Any, source: str) -> Feature:
    where = f"[features.{name}]"
    if not isinstance(decl, dict):
        raise _err(source, where, "must be a table with at least 'kind'.")
    kind = decl.get("kind")
    if kind == "numeric":
        allowed = _NUMERIC_KEYS
    elif kind == "categorical":
        allowed = _CATEGORICAL_KEYS
    else:
        raise _err(source, where, f"'kind' must be \"numeric\" or \"categorical\". "
                   f"Got {kind!r} instead.")
    extra = set(decl) - allowed
    if extra:
        raise _err(source, where, f"unknown key(s) {_unknown(extra, allowed)}; allowed: "
                   f"{sorted(allowed)}.")
    missing, column, weight = _common(name, decl, source)
    if kind == "numeric":
        bounds = _parse_bounds(decl, source, where)
        transform = _parse_transform(decl, bounds, source, where)
        default = None
        if "default" in decl:
            default = _number(decl["default"], source, f"{where} default")
        return NumericFeature(name=name, bounds=bounds, transform=transform,
                              missing=missing, default=default, weight=weight,
                              column=column)
    cats = decl.get("categories")
    if not isinstance(cats, list) or not cats:
        raise _err(source, where, "'categories' must be a non-empty list of declared values.")
    cats = [str(c) for c in cats]
    if len(set(cats)) != len(cats):
        raise _err(source, where, "'categories' has duplicate values.")
    other = decl.get("other", True)
    if not isinstance(other, bool):
        raise _err(source, where, f"'other' must be true or false. Got {other!r} instead.")
    if other and OTHER in cats:
        raise _err(source, where, f"category {OTHER!r} is reserved for the other slot.")
    default_cat = None if "default" not in decl else str(decl["default"])
    if default_cat is not None and default_cat not in cats and not (other and default_cat == OTHER):
        match = closest(default_cat, cats)
        hint = f" (did you mean {match!r}?)" if match else ""
        raise _err(source, where, f"'default' {default_cat!r} is not a declared category{hint}.")
    return CategoricalFeature(name=name, categories=tuple(cats), other=other,
                              missing=missing, default=default_cat, weight=weight,
                              column=column)


def _parse_target(name: str, decl: Any, source: str) -> TargetSpec:
    where = f"[target.{name}]"
    if not isinstance(decl, dict):
        raise _err(source, where, "must be a table with at least 'kind'.")
    kind = decl.get("kind")
    column = decl.get("column", name)
    if kind == "binary":
        if "positive" not in decl:
            raise _err(source, where, "a binary target needs 'positive', the value meaning 1.")
        return TargetSpec(name=name, kind="binary", positive=decl["positive"], column=column)
    if kind != "numeric":
        raise _err(source, where, f"'kind' must be \"numeric\" or \"binary\". Got {kind!r}.")
    bounds = _parse_bounds(decl, source, where)
    transform = _parse_transform(decl, bounds, source, where)
    return TargetSpec(name=name, kind="numeric", bounds=bounds, transform=transform,
                      column=column)
