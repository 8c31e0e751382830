"""Turning a partner's table into the contract's scaled customer matrix.

Everything here runs at the partner. The :class:`DataQualityReport` it returns holds exact
counts of the partner's own data: it stays local (written to the partner's output folder)
and is never sent as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedprofile.contract.data_quality import (
    MIN_CUSTOMERS_CHECKED,
    WARN_SHARE,
    DataQualityReport,
    _first_suggestions,
)
from fedprofile.contract.spec import OTHER, CategoricalFeature, FeatureSpec, NumericFeature
from fedprofile.contract.suggest import closest, missing_columns_hint, one_column_problem
from fedprofile.errors import DataError

__all__ = ["MIN_CUSTOMERS_CHECKED", "WARN_SHARE", "DataQualityReport", "FeatureMatrix",
           "resolve_columns", "transform_frame"]


@dataclass(frozen=True)
class FeatureMatrix:
    """The scaled matrix of one partner, one row per customer.

    Attributes
    ----------
    matrix : ndarray of shape (n_customers, spec.dim)
        Scaled vectors, each of L2 norm at most ``spec.norm_bound``.
    keep : ndarray of bool
        Which input rows became customers (rows with a dropped value are False).
    report : DataQualityReport
        Local data quality counts.
    """

    matrix: np.ndarray
    keep: np.ndarray
    report: DataQualityReport


def resolve_columns(spec: FeatureSpec, mapping: Mapping[str, str] | None = None) -> dict[str, str]:
    """Map each feature to the partner's local column (the mapping overrides the spec)."""
    mapping = dict(mapping or {})
    unknown = set(mapping) - {f.name for f in spec.features} - set(spec.targets)
    if unknown:
        raise DataError(f"The column mapping names unknown feature(s) {sorted(unknown)}; "
                        f"the spec {spec.source} declares {[f.name for f in spec.features]}.")
    return {f.name: mapping.get(f.name, f.column or f.name) for f in spec.features}


def _numeric_column(values: pd.Series, feat: NumericFeature, report: DataQualityReport
                    ) -> tuple[np.ndarray, np.ndarray]:
    if pd.api.types.is_bool_dtype(values):
        values = values.astype(float)
    if _is_temporal(values):  # a date or a duration is no number of the contract's units
        numbers = np.full(len(values), np.nan)
    else:
        numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, copy=True)
    numbers[~np.isfinite(numbers)] = np.nan
    absent = values.isna().to_numpy()
    bad = np.isnan(numbers) & ~absent
    report.unparseable[feat.name] = int(bad.sum())
    report.missing[feat.name] = int(absent.sum())
    invalid = np.isnan(numbers)
    parsed = numbers[~invalid]
    report._valid[feat.name] = len(parsed)
    single = float(parsed[0]) if len(parsed) and (parsed == parsed[0]).all() else None
    report._single[feat.name] = math.nan if not len(parsed) else single
    report._bounds[feat.name] = feat.bounds
    lo, hi = feat.bounds
    report.clipped[feat.name] = int(((parsed < lo) | (parsed > hi)).sum())
    if feat.missing == "impute":
        numbers[invalid] = feat.default
        report.imputed[feat.name] = int(invalid.sum())
        invalid = np.zeros_like(invalid)
    report.dropped_by[feat.name] = int(invalid.sum())
    return feat.scale(np.nan_to_num(numbers, nan=lo))[:, None], invalid


_TEMPORAL = frozenset({"datetime64", "datetime", "date", "time", "timedelta64", "timedelta",
                       "period"})


def _is_temporal(values: pd.Series) -> bool:
    """Whether ``values`` are dates, times or durations (a database's typed column).

    ``pd.to_numeric`` would turn them into nanoseconds, numbers in no contract's units.
    """
    if pd.api.types.is_datetime64_any_dtype(values) or pd.api.types.is_timedelta64_dtype(values):
        return True
    return values.dtype == object and pd.api.types.infer_dtype(values, skipna=True) in _TEMPORAL


def _category_text(values: pd.Series) -> pd.Series:
    """Values as trimmed text, with whole numbers held as floats written as integers.

    A CSV column of numeric codes with a blank reads as float: ``1.0`` names category ``"1"``.
    """
    text = values.astype("string")
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy(dtype=float)
        whole = np.isfinite(numbers) & (np.abs(numbers) < 2.0**53)
        whole[whole] = np.mod(numbers[whole], 1.0) == 0.0
        text[whole] = pd.array(numbers[whole].astype(np.int64).astype(str), dtype="string")
    return text.str.strip()


def _suggestions(unseen: pd.Series, categories: tuple[str, ...]) -> dict[str, str]:
    """Closest declared category of each undeclared value that resembles one (local only).

    Only the 1,000 most frequent undeclared values are compared, to bound the work.
    """
    found = {}
    for value in unseen.dropna().value_counts().index[:1000]:
        match = closest(str(value), categories)
        if match is not None:
            found[str(value)] = match
    return _first_suggestions(found)


def _categorical_column(values: pd.Series, feat: CategoricalFeature, report: DataQualityReport
                        ) -> tuple[np.ndarray, np.ndarray]:
    absent = values.isna().to_numpy()
    text = _category_text(values)
    index = {level: i for i, level in enumerate(feat.levels)}
    codes = text.map(index).fillna(-1).to_numpy(dtype=np.int64, copy=True)
    unseen = (codes < 0) & ~absent
    report.missing[feat.name] = int(absent.sum())
    report.other_category[feat.name] = int(unseen.sum())
    suggestions = _suggestions(text[unseen], feat.categories) if unseen.any() else {}
    if suggestions:
        report.other_suggestions[feat.name] = suggestions
    if feat.other:
        codes[unseen] = len(feat.levels) - 1
    invalid = codes < 0
    if feat.missing == "impute":
        codes[invalid] = feat.levels.index(feat.default or OTHER)
        report.imputed[feat.name] = int(invalid.sum())
        invalid = np.zeros_like(invalid)
    report.dropped_by[feat.name] = int(invalid.sum())
    onehot = np.zeros((len(values), feat.width))
    rows = np.flatnonzero(~invalid)
    onehot[rows, codes[rows]] = feat.weight
    return onehot, invalid


def transform_frame(frame: pd.DataFrame, spec: FeatureSpec, *,
                    mapping: Mapping[str, str] | None = None,
                    source: str = "partner table", check: bool = True) -> FeatureMatrix:
    """Transform a partner's table into the contract's scaled matrix.

    Parameters
    ----------
    frame : DataFrame
        One row per customer.
    spec : FeatureSpec
        The federation's contract.
    mapping : mapping of str to str, optional
        Feature name -> local column name, for partners whose columns differ.
    source : str
        Name of the table for error messages (usually its file path).
    check : bool, default=True
        Apply :meth:`DataQualityReport.check`; a chunked transform checks the merged
        report of all chunks instead.

    Raises
    ------
    DataError
        If a mapped column is missing, the table is empty, a numeric column holds no
        numbers, or no customer is left after the missing-value rules.
    """
    columns = resolve_columns(spec, mapping)
    absent = sorted({c for c in columns.values() if c not in frame.columns})
    if absent:
        problem = one_column_problem(list(frame.columns), needed=len(set(columns.values())))
        if problem:
            raise DataError(f"{source}: {problem}")
        hint = missing_columns_hint(absent, frame.columns)
        raise DataError(f"{source}: missing column(s) {absent}{hint} required by the spec "
                        f"{spec.source}; map them with a column mapping if they are named "
                        "differently.")
    report = DataQualityReport(rows=len(frame))
    blocks, invalid = [], np.zeros(len(frame), dtype=bool)
    for feat in spec.features:
        values = frame[columns[feat.name]]
        if isinstance(feat, NumericFeature):
            block, bad = _numeric_column(values, feat, report)
        else:
            block, bad = _categorical_column(values, feat, report)
        blocks.append(block)
        invalid |= bad
    keep = ~invalid
    report.dropped = int(invalid.sum())
    report.customers = int(keep.sum())
    if check:
        report.check(columns, source)
    return FeatureMatrix(matrix=np.hstack(blocks)[keep], keep=keep, report=report)
