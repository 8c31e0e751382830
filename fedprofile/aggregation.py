"""Identity columns and per-customer aggregation, declared in the contract.

A partner's table may hold many rows per customer (transactions). The contract's
``[customers]`` section says how rows become one row per customer, at the partner, after
pseudonymisation, so each customer contributes exactly one vector (the unit of privacy)::

    [customers]
    id = "pid"                      # (pseudonymous) customer id column
    date = "InvoiceDate"            # date column, for recency/tenure and the snapshot window
    snapshot = "2011-12-10"         # public snapshot date; rows on or after it are ignored

    [customers.rows]                # row-level columns (pandas expressions over the row)
    amount = "Quantity * UnitPrice"

    [customers.aggregates.monetary] # per-customer aggregates
    function = "sum"                # count sum mean min max distinct_count recency_days tenure_days
    source = "amount"
    where = "Quantity > 0"          # optional row filter (pandas query)

    [customers.derived]             # expressions over the aggregates
    mean_basket = "monetary / frequency"

Expressions are evaluated by pandas (``DataFrame.eval``/``query``) on the partner's own data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

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


def _expressions(section: Any, source: str, where: str) -> dict[str, str]:
    if not isinstance(section, dict) or not all(isinstance(v, str) for v in section.values()):
        raise _err(source, where, "must map column names to expressions (strings).")
    return dict(section)


def parse_customers(section: Any, source: str) -> CustomerAggregation:
    """Parse the ``[customers]`` section."""
    if not isinstance(section, dict):
        raise _err(source, "[customers]", "must be a table.")
    unknown = set(section) - {"id", "date", "snapshot", "rows", "aggregates", "derived"}
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
        aggregates.append(Aggregate(name=name, function=function, source=decl.get("source"),
                                    where=decl.get("where")))
    date, snapshot = section.get("date"), section.get("snapshot")
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
        snapshot=None if snapshot is None else str(snapshot),
        rows=_expressions(section.get("rows", {}), source, "[customers.rows]"),
        aggregates=tuple(aggregates),
        derived=_expressions(section.get("derived", {}), source, "[customers.derived]"))


def _evaluate(frame: pd.DataFrame, expression: str, what: str, source: str) -> Any:
    try:
        return frame.eval(expression, engine="python")
    except Exception as exc:  # noqa: BLE001 - pandas raises many types; name the expression
        raise DataError(f"{source}: {what} = {expression!r} cannot be evaluated "
                        f"({type(exc).__name__}); check the column names.") from None


def _aggregate_one(rows: pd.DataFrame, agg: Aggregate, spec: CustomerAggregation,
                   snapshot: pd.Timestamp | None, source: str) -> pd.Series:
    if agg.where:
        mask = _evaluate(rows, agg.where, f"aggregate {agg.name!r} where", source)
        rows = rows.loc[pd.Series(mask, index=rows.index).fillna(False).astype(bool)]
    groups = rows.groupby(spec.id, sort=False)
    if agg.function == "count":
        return groups.size()
    if agg.function in ("recency_days", "tenure_days"):
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
        raise DataError(f"{source}: missing column(s) {absent} needed to group rows by customer.")
    rows = frame.loc[frame[spec.id].notna()].copy()
    snapshot = pd.Timestamp(spec.snapshot) if spec.snapshot else None
    if spec.date:
        parsed = pd.to_datetime(rows[spec.date], errors="coerce", format="mixed")
        if (parsed.isna() & rows[spec.date].notna()).any():
            raise DataError(f"{source}: some values of the date column {spec.date!r} are not "
                            "dates (ISO 8601, e.g. 2011-12-09 or 2011-12-09 08:26:00).")
        rows[spec.date] = parsed
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
