"""Turning a partner's table into the contract's scaled customer matrix.

Everything here runs at the partner. The :class:`DataQualityReport` it returns holds exact
counts of the partner's own data: it stays local (written to the partner's output folder)
and is never sent as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.contract.spec import OTHER, CategoricalFeature, FeatureSpec, NumericFeature
from fedprofile.contract.suggest import closest, did_you_mean
from fedprofile.errors import DataError

__all__ = ["MIN_CUSTOMERS_CHECKED", "WARN_SHARE", "DataQualityReport", "FeatureMatrix",
           "resolve_columns", "transform_frame"]


MIN_CUSTOMERS_CHECKED = 20
"""A numeric feature is judged all-clipped or constant only from this many values on."""

WARN_SHARE = 0.05
"""A count above this share of the rows is a warning of :meth:`DataQualityReport.summary`."""

MAX_SUGGESTIONS = 20
"""At most this many ``(other)`` values per feature get a suggested category."""

_KINDS = {"dropped_by": "dropped", "missing": "missing", "unparseable": "unparseable",
          "clipped": "clipped", "other_category": "(other)", "imputed": "imputed"}


def _add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {key: a.get(key, 0) + b.get(key, 0) for key in {**a, **b}}


def _same(a: float | None, b: float | None) -> float | None:
    """The common single value of two parts (NaN: a part has none; None: values differ)."""
    if a is None or b is None:
        return None
    if math.isnan(a):
        return b
    if math.isnan(b) or a == b:
        return a
    return None


@dataclass
class DataQualityReport:
    """Local counts of how a partner's table met the contract (never sent unnoised).

    Per feature: ``dropped_by`` customers dropped because of this feature (a missing,
    unparseable or, with ``other = false``, undeclared value under ``missing = "drop"``),
    ``missing``, ``unparseable``, ``clipped`` (numeric values outside the bounds),
    ``other_category`` (values outside the declared categories) and ``imputed``.

    ``other_suggestions`` maps a categorical feature to ``{value: closest declared
    category}`` for undeclared values that resemble a category (e.g. ``"June": "Jun"``).
    These are the partner's own data values: they stay in its local ``data_quality.json``
    and console, and never enter an error message, a summary or anything sent.
    """

    rows: int = 0
    customers: int = 0
    dropped: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    imputed: dict[str, int] = field(default_factory=dict)
    unparseable: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)
    other_category: dict[str, int] = field(default_factory=dict)
    dropped_by: dict[str, int] = field(default_factory=dict)
    other_suggestions: dict[str, dict[str, str]] = field(default_factory=dict)
    _valid: dict[str, int] = field(default_factory=dict, repr=False)
    _single: dict[str, float | None] = field(default_factory=dict, repr=False)
    _bounds: dict[str, tuple[float, float]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-compatible dict (local: see the class notes)."""
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}

    def merge(self, other: DataQualityReport) -> DataQualityReport:
        """The report of two parts of one table (a chunked transform adds its chunks')."""
        suggestions = {name: _first_suggestions({**self.other_suggestions.get(name, {}),
                                                 **other.other_suggestions.get(name, {})})
                       for name in {**self.other_suggestions, **other.other_suggestions}}
        single = {name: _same(self._single.get(name, math.nan), other._single.get(name, math.nan))
                  for name in {**self._single, **other._single}}
        return DataQualityReport(
            rows=self.rows + other.rows, customers=self.customers + other.customers,
            dropped=self.dropped + other.dropped, missing=_add(self.missing, other.missing),
            imputed=_add(self.imputed, other.imputed),
            unparseable=_add(self.unparseable, other.unparseable),
            clipped=_add(self.clipped, other.clipped),
            other_category=_add(self.other_category, other.other_category),
            dropped_by=_add(self.dropped_by, other.dropped_by),
            other_suggestions=suggestions, _valid=_add(self._valid, other._valid),
            _single=single, _bounds={**self._bounds, **other._bounds})

    def constant_features(self) -> list[str]:
        """Numeric features whose (at least :data:`MIN_CUSTOMERS_CHECKED`) values are all equal."""
        return [name for name, valid in self._valid.items()
                if valid >= MIN_CUSTOMERS_CHECKED and self._single.get(name) is not None]

    def check(self, columns: Mapping[str, str], source: str) -> None:
        """Refuse a table the contract cannot use, naming the problem.

        ``columns`` maps feature names to the partner's column names (for the message).
        Messages name columns and features, never values.

        Raises
        ------
        DataError
            If the table has no rows, a numeric column holds no parseable value at all, or
            (with at least :data:`MIN_CUSTOMERS_CHECKED` values) every value lies outside
            the bounds or all values are equal and strictly inside them, or no customer is
            left after the missing-value rules. All values equal to a bound (0 purchases,
            -1 for "never contacted") is accepted: :meth:`summary` warns about it.
        """
        if self.rows == 0:
            raise DataError(f"{source}: the table has no rows (empty partition).")
        for name, bad in self.unparseable.items():
            if bad and bad == self.rows - self.missing.get(name, 0):
                raise DataError(f"{source}: column {columns[name]!r} (feature {name!r}) holds "
                                "no numeric values; is it the right column, or the right type?")
        for name, valid in self._valid.items():
            if valid < MIN_CUSTOMERS_CHECKED:
                continue
            where = f"{source}: column {columns[name]!r} (feature {name!r})"
            if self.clipped.get(name, 0) >= valid:
                raise DataError(f"{where}: every value lies outside the contract's bounds and "
                                "would be clipped; check the bounds, the units or the date "
                                "format.")
            value, (lo, hi) = self._single.get(name), self._bounds.get(name, (0.0, 0.0))
            if value is not None and lo < value < hi:
                raise DataError(f"{where}: every customer has the same value, inside the "
                                "bounds; check the bounds, the units or the date format.")
        if self.customers == 0:
            raise DataError(f"{source}: no customer is left after the missing-value rules "
                            "(every row had a missing or unparseable value in a feature "
                            "declared with missing = \"drop\").")

    def summary(self, *, warn_share: float = WARN_SHARE) -> dict[str, Any]:
        """Per-feature counts and shares of the rows, and warnings, for display.

        Parameters
        ----------
        warn_share : float, default=0.05
            A count above this share of the rows gives a warning.

        Returns
        -------
        dict
            ``rows``, ``customers``, ``dropped``, ``dropped_share``; ``features``: for
            each feature, ``{"dropped", "missing", "unparseable", "clipped", "other",
            "imputed"}`` counts and the same keys suffixed ``_share`` (of the rows);
            ``warnings``: one sentence per share above ``warn_share``. Counts only: no
            data value (``other_suggestions`` are left out).
        """
        rows = max(self.rows, 1)
        names = list(dict.fromkeys(n for kind in _KINDS for n in getattr(self, kind)))
        features: dict[str, dict[str, float]] = {}
        warnings = []
        if self.dropped / rows > warn_share:
            warnings.append(f"{100 * self.dropped / rows:.1f} % of the rows were dropped "
                            "(a value the contract drops was missing or unusable).")
        for name in names:
            entry: dict[str, float] = {}
            for kind, label in _KINDS.items():
                count = int(getattr(self, kind).get(name, 0))
                key = "other" if kind == "other_category" else label
                entry[key], entry[f"{key}_share"] = count, count / rows
                if kind != "imputed" and count / rows > warn_share:
                    warnings.append(f"Feature {name!r}: {100 * count / rows:.1f} % of the rows "
                                    f"{_PHRASES[kind]}.")
            features[name] = entry
        for name in self.constant_features():
            warnings.append(f"Feature {name!r}: every customer has the same value.")
        return {"rows": self.rows, "customers": self.customers, "dropped": self.dropped,
                "dropped_share": self.dropped / rows, "features": features,
                "warnings": warnings}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> DataQualityReport:
        """The report written by :meth:`to_dict` (e.g. a partner's ``data_quality.json``)."""
        def counts(key: str) -> dict[str, int]:
            value = doc.get(key) or {}
            return {str(k): int(v) for k, v in value.items()} if isinstance(value, Mapping) \
                else {}

        suggestions = doc.get("other_suggestions") or {}
        return cls(rows=int(doc.get("rows", 0)), customers=int(doc.get("customers", 0)),
                   dropped=int(doc.get("dropped", 0)), missing=counts("missing"),
                   imputed=counts("imputed"), unparseable=counts("unparseable"),
                   clipped=counts("clipped"), other_category=counts("other_category"),
                   dropped_by=counts("dropped_by"),
                   other_suggestions={str(k): dict(v) for k, v in suggestions.items()})


_PHRASES = {"dropped_by": "were dropped for a missing or unusable value",
            "missing": "are missing", "unparseable": "are not numbers",
            "clipped": "lie outside the bounds (clipped)",
            "other_category": "are not declared categories (counted as (other))"}


def _first_suggestions(found: Mapping[str, str]) -> dict[str, str]:
    """At most :data:`MAX_SUGGESTIONS` suggestions, the first values in text order."""
    return {value: found[value] for value in sorted(found)[:MAX_SUGGESTIONS]}


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


def _hints(absent: list[str], columns: pd.Index) -> str:
    """`` (did you mean 'x'?)`` for close column names (schema, never data values)."""
    if len(absent) == 1:
        return did_you_mean(absent[0], columns)
    found = [(name, closest(name, columns)) for name in absent]
    pieces = [f"{name!r}: did you mean {match!r}?" for name, match in found if match]
    return f" ({'; '.join(pieces)})" if pieces else ""


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
        raise DataError(f"{source}: missing column(s) {absent}{_hints(absent, frame.columns)} "
                        f"required by the spec "
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
