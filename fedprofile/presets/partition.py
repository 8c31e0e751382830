"""Split one customer table into simulated partner companies.

Three rules are supported, written as short strings on the command line:

- ``"column:<name>"``: one partner per value of a column; when the column has more distinct
  values than partners, values are grouped into balanced groups.
- ``"iid"``: a seeded shuffle cut into equal parts.
- ``"dirichlet:<alpha>:<label>"``: non-IID label skew; the rows of every label value are
  spread over the partners with proportions drawn from ``Dirichlet(alpha)``.

When rows are transactions (a contract with a ``[customers]`` section), the caller passes
each row's customer (:func:`fedprofile.presets.identity.customer_keys`) and the rules split
customers: all rows of a customer go to one partner, and groups are balanced in customers.

Every function here is pure: the same frame, rule, partner count and seed give the same
partitions, in the same order. Partition frames keep the row index labels of the input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from fedprofile.contract.suggest import did_you_mean
from fedprofile.errors import ContractError
from fedprofile.presets.owners import (
    MISSING_VALUE_NAME,
    _column_groups,
    _customer_codes,
    _dirichlet_owner,
    _group_values,
    _iid_owner,
    _Units,
)

__all__ = [
    "MISSING_VALUE_NAME",
    "Partition",
    "PartitionRule",
    "PartnerFile",
    "parse_rule",
    "partition_frame",
]

_RULE_SYNTAX = "'column:<name>', 'iid' or 'dirichlet:<alpha>:<label column>'"


@dataclass(frozen=True)
class PartitionRule:
    """How to split a frame into partners.

    Parameters
    ----------
    kind : {"column", "iid", "dirichlet"}
        The splitting rule.
    column : str or None, default=None
        The partition column (``"column"``) or the label column (``"dirichlet"``);
        must be None for ``"iid"``.
    alpha : float or None, default=None
        Dirichlet concentration in (0, inf), only for ``"dirichlet"``; small values give
        strongly skewed partners.

    Raises
    ------
    ContractError
        If the fields do not fit the kind.
    """

    kind: Literal["column", "iid", "dirichlet"]
    column: str | None = None
    alpha: float | None = None

    def __post_init__(self) -> None:
        """Check that the fields fit the kind."""
        if self.kind not in ("column", "iid", "dirichlet"):
            raise ContractError(
                "The 'kind' parameter of PartitionRule must be one of 'column', 'iid', "
                f"'dirichlet'. Got {self.kind!r} instead."
            )
        if self.kind == "iid":
            if self.column is not None or self.alpha is not None:
                raise ContractError(
                    "A PartitionRule of kind 'iid' takes no column and no alpha. "
                    f"Got column={self.column!r}, alpha={self.alpha!r} instead."
                )
            return
        if not isinstance(self.column, str) or not self.column:
            raise ContractError(
                f"A PartitionRule of kind {self.kind!r} needs a non-empty column name. "
                f"Got column={self.column!r} instead."
            )
        if self.kind == "column" and self.alpha is not None:
            raise ContractError(
                f"A PartitionRule of kind 'column' takes no alpha. Got alpha={self.alpha!r} "
                "instead; use kind 'dirichlet' for label skew."
            )
        if self.kind == "dirichlet":
            _check_alpha(self.alpha)

    def __str__(self) -> str:
        """Return the rule in the syntax that :func:`parse_rule` reads."""
        if self.kind == "iid":
            return "iid"
        if self.kind == "column":
            return f"column:{self.column}"
        return f"dirichlet:{self.alpha:g}:{self.column}"


@dataclass(frozen=True, eq=False)
class Partition:
    """One simulated partner's slice of the customer table.

    Parameters
    ----------
    name : str
        Readable partner name, e.g. ``"blue-collar+retired"`` or ``"iid-0"``.
    frame : pandas.DataFrame
        The partner's rows, with the index labels they had in the input frame.
    customers : int or None, default=None
        Distinct customers among the rows, when rows are transactions grouped per customer
        at the partner; None when every row is a customer.
    """

    name: str
    frame: pd.DataFrame = field(repr=False)
    customers: int | None = None

    def __len__(self) -> int:
        """Return the number of rows of the partner."""
        return len(self.frame)

    @property
    def n_customers(self) -> int:
        """The partner's number of customers (its rows, when every row is a customer)."""
        return len(self.frame) if self.customers is None else self.customers

    @property
    def label(self) -> str:
        """``name (N customers)``, plus the row count when rows are transactions."""
        text = f"{self.name} ({self.n_customers:,} customers"
        if self.customers is not None:
            text += f", {len(self.frame):,} rows"
        return text + ")"


@dataclass(frozen=True)
class PartnerFile:
    """A simulated partner whose table is already a file, never loaded by the runner.

    For data at scale: the runner hands the path to the partner, which streams it.
    """

    name: str
    path: Path


def parse_rule(text: str) -> PartitionRule:
    """Parse a partition rule written as text.

    Parameters
    ----------
    text : str
        ``"column:<name>"``, ``"iid"`` or ``"dirichlet:<alpha>:<label column>"``,
        e.g. ``"column:job"`` or ``"dirichlet:0.3:job"``.

    Returns
    -------
    PartitionRule
        The parsed rule.

    Raises
    ------
    ContractError
        If the text does not follow the syntax.

    Examples
    --------
    >>> parse_rule("dirichlet:0.3:job")
    PartitionRule(kind='dirichlet', column='job', alpha=0.3)
    """
    if not isinstance(text, str):
        raise ContractError(
            f"A partition rule must be a str such as {_RULE_SYNTAX}. Got {type(text).__name__}."
        )
    kind, _, rest = text.strip().partition(":")
    if kind == "iid" and not rest:
        return PartitionRule("iid")
    if kind == "column" and rest:
        return PartitionRule("column", column=rest)
    if kind == "dirichlet":
        alpha_text, _, column = rest.partition(":")
        try:
            alpha = float(alpha_text)
        except ValueError:
            alpha = math.nan
        if not column or not math.isfinite(alpha):
            raise ContractError(
                "A Dirichlet partition rule must read 'dirichlet:<alpha>:<label column>', "
                f"e.g. 'dirichlet:0.3:job'. Got {text!r} instead."
            )
        return PartitionRule("dirichlet", column=column, alpha=alpha)
    raise ContractError(f"A partition rule must be {_RULE_SYNTAX}. Got {text!r} instead.")


def partition_frame(
    df: pd.DataFrame, rule: PartitionRule, n_partners: int, *, seed: int = 0,
    customers: pd.Series | np.ndarray | None = None,
) -> list[Partition]:
    """Split a frame into ``n_partners`` disjoint, non-empty partitions.

    Parameters
    ----------
    df : pandas.DataFrame
        One row per customer, or (with ``customers``) several rows per customer.
    rule : PartitionRule
        The splitting rule (see :func:`parse_rule`).
    n_partners : int
        Number of partners, at least 1.
    seed : int, default=0
        Seed of ``numpy.random.default_rng`` for the ``"iid"`` and ``"dirichlet"`` rules;
        the ``"column"`` rule is deterministic and ignores it.
    customers : pandas.Series or ndarray, optional
        The customer of each row (positionally aligned with ``df``; missing = no customer),
        for tables whose rows are transactions grouped per customer at the partner (see
        :func:`fedprofile.presets.identity.customer_keys`). Then a customer's rows all go to one
        partner,
        the rules split and balance customers rather than rows, and a customer's value of
        the rule's column is the one most of its rows hold (ties: its first row's). Rows
        without a customer are spread evenly (``"iid"``, ``"dirichlet"``) or follow their
        own value (``"column"``); they count as no customer.

    Returns
    -------
    list of Partition
        One partition per partner, in a deterministic order: for ``"column"`` the group
        holding the most customers first; otherwise by partner number.

    Raises
    ------
    ContractError
        If a parameter is invalid, the rule's column is absent, the column has fewer distinct
        values than partners, or a partner would receive no rows (no customer).
    """
    _check_args(df, rule, n_partners, seed)
    codes = None if customers is None else _customer_codes(df, customers)
    rows = _Units(df, codes)
    rng = np.random.default_rng(seed)
    names = [f"{rule.kind}-{i}" for i in range(n_partners)]
    if rule.kind == "column":
        values = rows.unit_values(_group_values(df, str(rule.column)))
        groups = _column_groups(values, str(rule.column), n_partners)
        names = ["+".join(group) for group in groups]
        where = {value: g for g, group in enumerate(groups) for value in group}
        owner = rows.owner(values.map(where).to_numpy(dtype=np.int64),
                           rows.loose_values(_group_values(df, str(rule.column)), where))
    elif rule.kind == "iid":
        owner = rows.owner(_iid_owner(rows.n_units, n_partners, rng),
                           _iid_owner(rows.n_loose, n_partners, rng))
    else:
        labels = rows.unit_values(_group_values(df, str(rule.column))).to_numpy()
        owner = rows.owner(_dirichlet_owner(labels, float(rule.alpha or 0.0), n_partners, rng),
                           _iid_owner(rows.n_loose, n_partners, rng))
    counts = rows.customers_per_owner(n_partners)
    parts = [Partition(name, df.iloc[np.flatnonzero(owner == i)],
                       None if counts is None else int(counts[i]))
             for i, name in enumerate(names)]
    for part in parts:
        if part.frame.empty or part.customers == 0:
            what = "no rows" if part.frame.empty else "no customer"
            raise ContractError(
                f"Partner {part.name!r} received {what} under rule {str(rule)!r} with "
                f"n_partners={n_partners}, seed={seed}. Every partner must hold data: use fewer "
                "partners, a larger alpha or another seed."
            )
    return parts


def _check_alpha(alpha: object) -> None:
    """Raise ContractError unless ``alpha`` is a finite float in (0, inf)."""
    if (not isinstance(alpha, int | float) or isinstance(alpha, bool)
            or not math.isfinite(float(alpha)) or float(alpha) <= 0):
        raise ContractError(
            "The 'alpha' parameter of a Dirichlet PartitionRule must be a float in the range "
            f"(0, inf). Got {alpha!r} instead."
        )


def _check_args(df: pd.DataFrame, rule: PartitionRule, n_partners: int, seed: int) -> None:
    """Validate the arguments of :func:`partition_frame`."""
    if not isinstance(df, pd.DataFrame):
        raise ContractError(
            "The 'df' parameter of partition_frame must be a pandas.DataFrame. "
            f"Got {type(df).__name__} instead."
        )
    if not isinstance(rule, PartitionRule):
        raise ContractError(
            "The 'rule' parameter of partition_frame must be a PartitionRule (see parse_rule). "
            f"Got {type(rule).__name__} instead."
        )
    if isinstance(n_partners, bool) or not isinstance(n_partners, (int, np.integer)):
        raise ContractError(
            "The 'n_partners' parameter of partition_frame must be an int in the range "
            f"[1, inf). Got {n_partners!r} instead."
        )
    if n_partners < 1:
        raise ContractError(
            "The 'n_partners' parameter of partition_frame must be an int in the range "
            f"[1, inf). Got {n_partners!r} instead."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ContractError(
            "The 'seed' parameter of partition_frame must be an int in the range [0, inf). "
            f"Got {seed!r} instead."
        )
    if rule.column is not None and rule.column not in df.columns:
        raise ContractError(
            f"The partition column {rule.column!r} of rule {str(rule)!r} is not in the frame"
            f"{did_you_mean(rule.column, df.columns)}. "
            f"Available columns: {', '.join(map(str, df.columns))}."
        )
