"""Identity columns and per-customer aggregation, declared in the contract.

A partner's table may hold many rows per customer (transactions). The contract's
``[customers]`` section says how rows become one row per customer, at the partner, after
pseudonymisation, so each customer contributes exactly one vector (the unit of privacy)::

    [customers]
    id = "pid"                      # (pseudonymous) customer id column
    date = "InvoiceDate"            # date column, for recency/tenure and the snapshot window
    date_format = "%Y%m%d"          # optional; ISO 8601 (2011-12-09 08:26:00) by default
    snapshot = "2011-12-10"         # public snapshot date (ISO 8601); rows on or after it
                                    # are ignored

    [customers.rows]                # row-level columns (expressions over the row)
    amount = "Quantity * UnitPrice"

    [customers.aggregates.monetary] # per-customer aggregates
    function = "sum"                # count sum mean min max distinct_count recency_days tenure_days
    source = "amount"
    where = "Quantity > 0"          # optional row filter (expression)

    [customers.derived]             # expressions over the aggregates
    mean_basket = "monetary / frequency"

Expressions use the small allow-listed language of :mod:`fedprofile.contract.expressions` (column
names, literals, arithmetic, comparisons, boolean operators and a few named functions); they
are validated when the contract is loaded and evaluated column-wise on the partner's own
data, never by ``eval``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.contract.expressions import parse_expression
from fedprofile.contract.suggest import missing_columns_hint, one_column_problem
from fedprofile.errors import ContractError, DataError

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "Aggregate",
    "CustomerAggregation",
    "IdentitySpec",
    "aggregate_customers",
    "parse_customers",
    "parse_identity",
]

AGGREGATE_FUNCTIONS = ("count", "sum", "mean", "min", "max", "distinct_count",
                       "recency_days", "tenure_days")
_PANDAS_AGG = {"count": "count", "sum": "sum", "mean": "mean", "min": "min", "max": "max",
               "distinct_count": "nunique"}


@dataclass(frozen=True)
class IdentitySpec:
    """Identity columns pseudonymised at the partner (never sent, never kept raw)."""

    email: str | None = None
    phone: str | None = None
    region: str = "GB"

    @property
    def columns(self) -> list[str]:
        """The raw identity columns."""
        return [c for c in (self.email, self.phone) if c]

    def to_dict(self) -> dict[str, Any]:
        """TOML-compatible form."""
        d: dict[str, Any] = {"region": self.region}
        if self.email:
            d["email"] = self.email
        if self.phone:
            d["phone"] = self.phone
        return d


@dataclass(frozen=True)
class Aggregate:
    """One per-customer aggregate."""

    name: str
    function: str
    source: str | None = None
    where: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """TOML-compatible form."""
        d: dict[str, Any] = {"function": self.function}
        if self.source:
            d["source"] = self.source
        if self.where:
            d["where"] = self.where
        return d


@dataclass(frozen=True)
class CustomerAggregation:
    """How rows become one row per customer."""

    id: str = "pid"
    date: str | None = None
    snapshot: str | None = None
    date_format: str | None = None
    rows: dict[str, str] = field(default_factory=dict)
    aggregates: tuple[Aggregate, ...] = ()
    derived: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """TOML-compatible form."""
        d: dict[str, Any] = {"id": self.id, "rows": dict(self.rows),
                             "aggregates": {a.name: a.to_dict() for a in self.aggregates},
                             "derived": dict(self.derived)}
        if self.date:
            d["date"] = self.date
        if self.snapshot:
            d["snapshot"] = self.snapshot
        if self.date_format:
            d["date_format"] = self.date_format
        return d


def _err(source: str, where: str, problem: str) -> ContractError:
    return ContractError(f"Spec {source}: {where}: {problem}")


def parse_identity(section: Any, source: str) -> IdentitySpec:
    """Parse ``[identity]``: ``email``/``phone`` column names, or DESIGN's ``columns`` list."""
    if not isinstance(section, dict):
        raise _err(source, "[identity]", "must be a table.")
    email, phone = section.get("email"), section.get("phone")
    for column in section.get("columns", []):
        lowered = str(column).lower()
        if "mail" in lowered and email is None:
            email = column
        elif any(t in lowered for t in ("phone", "mobile", "tel")) and phone is None:
            phone = column
        elif column not in (email, phone):
            raise _err(source, "[identity] columns", f"cannot tell whether {column!r} is an "
                       "e-mail or a phone column; use email = \"...\" / phone = \"...\".")
    region = section.get("region", "GB")
    if not email and not phone:
        raise _err(source, "[identity]", "declare an 'email' and/or a 'phone' column.")
    return IdentitySpec(email=email, phone=phone, region=str(region))


def _check_expression(text: Any, source: str, where: str) -> str:
    if not isinstance(text, str):
        raise _err(source, where, "must be an expression (a string).")
    try:
        parse_expression(text)
    except ContractError as exc:
        raise _err(source, where, str(exc)) from None
    return text


def _expressions(section: Any, source: str, where: str) -> dict[str, str]:
    if not isinstance(section, dict) or not all(isinstance(v, str) for v in section.values()):
        raise _err(source, where, "must map column names to expressions (strings).")
    return {name: _check_expression(text, source, f"{where} {name}")
            for name, text in section.items()}


def _check_date_format(date_format: Any, source: str) -> str | None:
    if date_format is None:
        return None
    where = "[customers] date_format"
    if not isinstance(date_format, str) or "%" not in date_format:
        raise _err(source, where, f"must be a strptime format such as \"%Y%m%d\"; got "
                   f"{date_format!r}.")
    sample = pd.Timestamp("2001-02-03 04:05:06")
    try:
        ok = pd.to_datetime(sample.strftime(date_format), format=date_format) is not pd.NaT
    except ValueError:
        ok = False
    if not ok:
        raise _err(source, where, f"{date_format!r} is not a usable strptime format.")
    return date_format


def parse_customers(section: Any, source: str) -> CustomerAggregation:
    """Parse the ``[customers]`` section."""
    if not isinstance(section, dict):
        raise _err(source, "[customers]", "must be a table.")
    unknown = set(section) - {"id", "date", "date_format", "snapshot", "rows", "aggregates",
                              "derived"}
    if unknown:
        raise _err(source, "[customers]", f"unknown key(s) {sorted(unknown)}.")
    aggregates = []
    for name, decl in section.get("aggregates", {}).items():
        where = f"[customers.aggregates.{name}]"
        if not isinstance(decl, dict):
            raise _err(source, where, "must be a table with 'function'.")
        function = decl.get("function")
        if function not in AGGREGATE_FUNCTIONS:
            raise _err(source, where, f"'function' must be one of {list(AGGREGATE_FUNCTIONS)}."
                       f" Got {function!r} instead.")
        if function not in ("count", "recency_days", "tenure_days") and not decl.get("source"):
            raise _err(source, where, f"function {function!r} needs a 'source' column.")
        for key in ("source", "where"):
            if decl.get(key) is not None:
                _check_expression(decl[key], source, f"{where} {key}")
        aggregates.append(Aggregate(name=name, function=function, source=decl.get("source"),
                                    where=decl.get("where")))
    date, snapshot = section.get("date"), section.get("snapshot")
    date_format = _check_date_format(section.get("date_format"), source)
    if date_format and not date:
        raise _err(source, "[customers]", "'date_format' needs a 'date' column.")
    if any(a.function in ("recency_days", "tenure_days") for a in aggregates) and \
            not (date and snapshot):
        raise _err(source, "[customers]", "recency_days/tenure_days need 'date' and 'snapshot'.")
    if snapshot is not None:
        try:
            pd.Timestamp(str(snapshot))
        except ValueError:
            raise _err(source, "[customers]", f"'snapshot' {snapshot!r} is not a date.") from None
    if not aggregates:
        raise _err(source, "[customers]", "declare at least one aggregate.")
    return CustomerAggregation(
        id=str(section.get("id", "pid")), date=date,
        snapshot=None if snapshot is None else str(snapshot), date_format=date_format,
        rows=_expressions(section.get("rows", {}), source, "[customers.rows]"),
        aggregates=tuple(aggregates),
        derived=_expressions(section.get("derived", {}), source, "[customers.derived]"))


def _evaluate(frame: pd.DataFrame, expression: str, what: str, source: str) -> Any:
    try:
        return parse_expression(expression).evaluate(frame)
    except ContractError as exc:
        raise DataError(f"{source}: {what} = {expression!r} is not allowed: {exc}") from None
    except DataError as exc:  # names columns and operations only, never values
        reason = str(exc)
    except Exception as exc:  # noqa: BLE001 - pandas raises many types; messages may hold values
        reason = type(exc).__name__
    raise DataError(f"{source}: {what} = {expression!r} cannot be evaluated ({reason}); "
                    "check the column names.")


def _as_text(value: Any) -> str:
    """``20111209`` and ``20111209.0`` (an integer column with gaps) -> ``"20111209"``."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _parse_dates(values: pd.Series, column: str, date_format: str | None,
                 source: str) -> pd.Series:
    """Parse a date column: ISO 8601 by default, else ``date_format``; never epoch numbers."""
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = values
    else:
        numeric = pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
        if numeric and date_format is None:
            raise DataError(f"{source}: the date column {column!r} holds numbers, not dates; "
                            "declare their format in [customers], e.g. "
                            "date_format = \"%Y%m%d\" for 20111209.")
        text = values if pd.api.types.is_string_dtype(values) and not numeric else \
            values.map(_as_text, na_action="ignore").astype(object)
        try:
            parsed = pd.to_datetime(text, errors="coerce", format=date_format or "ISO8601")
        except (ValueError, TypeError):
            raise DataError(f"{source}: the values of the date column {column!r} mix time "
                            "zones; write them all in one zone, or all without one.") from None
        bad = int((parsed.isna() & values.notna()).sum())
        if bad:
            expected = f"the declared date_format {date_format!r}" if date_format else \
                "ISO 8601, e.g. 2011-12-09 or 2011-12-09 08:26:00 (else declare date_format)"
            raise DataError(f"{source}: {bad} of {int(values.notna().sum())} values of the "
                            f"date column {column!r} do not match {expected}.")
    if parsed.dt.tz is not None:  # one zone: keep its local calendar days
        parsed = parsed.dt.tz_localize(None)
    days = parsed.dropna().dt.normalize()
    if len(days) > 1 and days.nunique() == 1:
        raise DataError(f"{source}: all {len(days)} values of the date column {column!r} "
                        "fall on the same day, so recency and tenure would carry no "
                        "information; check the column and its date_format.")
    return parsed


def _aggregate_one(rows: pd.DataFrame, agg: Aggregate, spec: CustomerAggregation,
                   snapshot: pd.Timestamp | None, source: str) -> pd.Series:
    if agg.where:
        mask = _evaluate(rows, agg.where, f"aggregate {agg.name!r} where", source)
        rows = rows.loc[pd.Series(mask, index=rows.index).fillna(False).astype(bool)]
    groups = rows.groupby(spec.id, sort=False)
    if agg.function == "count":
        return groups.size()
    if agg.function in ("recency_days", "tenure_days"):
        # the [customers] parser refuses recency_days/tenure_days without 'date' and 'snapshot'
        assert spec.date is not None and snapshot is not None, "recency needs date and snapshot"
        dates = groups[spec.date].max() if agg.function == "recency_days" \
            else groups[spec.date].min()
        return (snapshot.normalize() - dates.dt.normalize()).dt.days.astype(float)
    values = rows[agg.source] if agg.source in rows.columns else \
        _evaluate(rows, str(agg.source), f"aggregate {agg.name!r} source", source)
    return pd.Series(values, index=rows.index).groupby(rows[spec.id], sort=False) \
        .agg(_PANDAS_AGG[agg.function])


def aggregate_customers(frame: pd.DataFrame, spec: CustomerAggregation, *,
                        source: str = "partner table") -> pd.DataFrame:
    """One row per customer (index: the id column) with every aggregate and derived column.

    Rows without an id are ignored; with a snapshot, rows dated on or after it are ignored.

    Raises
    ------
    DataError
        If the id or date column is missing or an expression cannot be evaluated.
    """
    needed = [spec.id] + ([spec.date] if spec.date else [])
    absent = [c for c in needed if c not in frame.columns]
    if absent:
        problem = one_column_problem(list(frame.columns),
                                     needed=len(needed) + len(spec.aggregates))
        if problem:
            raise DataError(f"{source}: {problem}")
        hint = missing_columns_hint(absent, frame.columns)
        raise DataError(f"{source}: missing column(s) {absent}{hint} needed to group rows by "
                        "customer.")
    rows = frame.loc[frame[spec.id].notna()].copy()
    snapshot = pd.Timestamp(spec.snapshot) if spec.snapshot else None
    if spec.date:
        rows[spec.date] = _parse_dates(rows[spec.date], spec.date, spec.date_format, source)
        if snapshot is not None:
            rows = rows.loc[rows[spec.date] < snapshot]
    for name, expression in spec.rows.items():
        rows[name] = _evaluate(rows, expression, f"row column {name!r}", source)
    out = pd.DataFrame({agg.name: _aggregate_one(rows, agg, spec, snapshot, source)
                        for agg in spec.aggregates})
    for name, expression in spec.derived.items():
        out[name] = _evaluate(out, expression, f"derived column {name!r}", source)
    if out.empty:
        raise DataError(f"{source}: no customer left after grouping rows by {spec.id!r}.")
    out.index.name = spec.id
    return out
