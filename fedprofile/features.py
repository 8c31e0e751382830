"""Turning a partner's table into the contract's scaled customer matrix.

Everything here runs at the partner. The :class:`DataQualityReport` it returns holds exact
counts of the partner's own data: it stays local (written to the partner's output folder)
and is never sent as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.contract import OTHER, CategoricalFeature, FeatureSpec, NumericFeature
from fedprofile.errors import DataError

__all__ = ["DataQualityReport", "FeatureMatrix", "resolve_columns", "transform_frame"]


@dataclass
class DataQualityReport:
    """Local counts of how a partner's table met the contract (never sent unnoised)."""

    rows: int = 0
    customers: int = 0
    dropped: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    imputed: dict[str, int] = field(default_factory=dict)
    unparseable: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    other_category: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-compatible dict."""
        return asdict(self)

    def merge(self, other: DataQualityReport) -> DataQualityReport:
        """The report of two parts of one table (a chunked transform adds its chunks')."""
        def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
            return {key: a.get(key, 0) + b.get(key, 0) for key in {**a, **b}}

        return DataQualityReport(
            rows=self.rows + other.rows, customers=self.customers + other.customers,
            dropped=self.dropped + other.dropped, missing=add(self.missing, other.missing),
            imputed=add(self.imputed, other.imputed),
            unparseable=add(self.unparseable, other.unparseable),
            clipped=add(self.clipped, other.clipped),
            other_category=add(self.other_category, other.other_category))

    def check(self, columns: Mapping[str, str], source: str) -> None:
        """Refuse a table the contract cannot use, naming the problem.

        ``columns`` maps feature names to the partner's column names (for the message).

        Raises
        ------
        DataError
            If the table has no rows, a numeric column holds no parseable value at all, or
            no customer is left after the missing-value rules.
        """
        if self.rows == 0:
            raise DataError(f"{source}: the table has no rows (empty partition).")
        for name, bad in self.unparseable.items():
            if bad and bad == self.rows - self.missing.get(name, 0):
                raise DataError(f"{source}: column {columns[name]!r} (feature {name!r}) holds "
                                "no numeric values; is it the right column, or the right type?")
        if self.customers == 0:
            raise DataError(f"{source}: no customer is left after the missing-value rules "
                            "(every row had a missing or unparseable value in a feature "
                            "declared with missing = \"drop\").")


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
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, copy=True)
    numbers[~np.isfinite(numbers)] = np.nan
    absent = values.isna().to_numpy()
    bad = np.isnan(numbers) & ~absent
    report.unparseable[feat.name] = int(bad.sum())
    report.missing[feat.name] = int(absent.sum())
    invalid = np.isnan(numbers)
    if feat.missing == "impute":
        numbers[invalid] = feat.default
        report.imputed[feat.name] = int(invalid.sum())
        invalid = np.zeros_like(invalid)
    lo, hi = feat.bounds
    report.clipped[feat.name] = int(((numbers < lo) | (numbers > hi)).sum())
    return feat.scale(np.nan_to_num(numbers, nan=lo))[:, None], invalid


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


def _categorical_column(values: pd.Series, feat: CategoricalFeature, report: DataQualityReport
                        ) -> tuple[np.ndarray, np.ndarray]:
    absent = values.isna().to_numpy()
    text = _category_text(values)
    index = {level: i for i, level in enumerate(feat.levels)}
    codes = text.map(index).fillna(-1).to_numpy(dtype=np.int64, copy=True)
    unseen = (codes < 0) & ~absent
    report.missing[feat.name] = int(absent.sum())
    report.other_category[feat.name] = int(unseen.sum())
    if feat.other:
        codes[unseen] = len(feat.levels) - 1
    invalid = codes < 0
    if feat.missing == "impute":
        codes[invalid] = feat.levels.index(feat.default or OTHER)
        report.imputed[feat.name] = int(invalid.sum())
        invalid = np.zeros_like(invalid)
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
        raise DataError(f"{source}: missing column(s) {absent} required by the spec "
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
