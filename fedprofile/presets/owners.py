"""Which partner gets each row: value groups, customer units and the three rules' owners.

The building blocks of :func:`fedprofile.presets.partition.partition_frame`: grouping the
values of a partition column, the units a split assigns (customers or single rows) and the
seeded owner draws of the ``iid`` and ``dirichlet`` rules. Every function here is pure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fedprofile.errors import ContractError

MISSING_VALUE_NAME = "(missing)"
"""Group value that stands for a missing value of the partition column."""


def _group_values(df: pd.DataFrame, column: str) -> pd.Series:
    """Return the column as text group values, with missing values as ``(missing)``."""
    values = df[column]
    text = values.astype(object).map(str)
    return text.where(values.notna(), MISSING_VALUE_NAME)


def _greedy_groups(counts: pd.Series, n_groups: int) -> list[list[str]]:
    """Assign values to groups, largest value first into the currently smallest group.

    Ties between values are broken by the value text, ties between groups by group number,
    so the result is deterministic. Assumes ``len(counts) >= n_groups``.
    """
    ordered = sorted(counts.items(), key=lambda item: (-int(item[1]), str(item[0])))
    groups: list[list[str]] = [[] for _ in range(n_groups)]
    sizes = [0] * n_groups
    for value, count in ordered:
        target = min(range(n_groups), key=lambda g: (sizes[g], g))
        groups[target].append(str(value))
        sizes[target] += int(count)
    return groups


class _Units:
    """Rows grouped into the units a split assigns: customers, or single rows.

    ``codes`` gives each row's customer number (``-1``: no customer); without codes every
    row is its own unit. Rows without a customer are "loose": assigned apart, never counted.
    """

    def __init__(self, df: pd.DataFrame, codes: np.ndarray | None) -> None:
        self._keyed = codes is not None
        self._codes = np.arange(len(df)) if codes is None else codes
        self.n_units = int(self._codes.max()) + 1 if len(self._codes) else 0
        self._loose = np.flatnonzero(self._codes < 0)
        self.n_loose = len(self._loose)
        self._unit_owner = np.zeros(0, dtype=np.int64)

    def unit_values(self, values: pd.Series) -> pd.Series:
        """Each unit's value: the one most of its rows hold, ties broken by its first row."""
        if not self._keyed:
            return values.reset_index(drop=True)
        rows = pd.DataFrame({"unit": self._codes, "value": values.to_numpy(),
                             "pos": np.arange(len(values))}).loc[self._codes >= 0]
        stats = rows.groupby(["unit", "value"], sort=False)["pos"].agg(["size", "min"])
        stats = stats.reset_index().sort_values(["unit", "size", "min"],
                                                ascending=[True, False, True])
        chosen = stats.drop_duplicates("unit").set_index("unit")["value"]
        return chosen.reindex(range(self.n_units)).reset_index(drop=True)

    def loose_values(self, values: pd.Series, where: dict[str, int]) -> np.ndarray:
        """Groups of the loose rows by their own value; unknown values go to group 0."""
        own = values.to_numpy()[self._loose]
        return np.asarray([where.get(v, 0) for v in own], dtype=np.int64)

    def owner(self, unit_owner: np.ndarray, loose_owner: np.ndarray) -> np.ndarray:
        """The partner of every row, from its unit's partner (or its own, when loose)."""
        owner = unit_owner[np.maximum(self._codes, 0)] if self.n_units else \
            np.zeros(len(self._codes), dtype=np.int64)
        owner[self._loose] = loose_owner
        self._unit_owner = unit_owner
        return owner

    def customers_per_owner(self, n_partners: int) -> np.ndarray | None:
        """Customers of each partner (None when rows are customers)."""
        if not self._keyed:
            return None
        return np.bincount(self._unit_owner, minlength=n_partners)


def _customer_codes(df: pd.DataFrame, customers: pd.Series | np.ndarray) -> np.ndarray:
    """Customer numbers ``0..n-1`` of the rows in order of appearance; ``-1`` for none."""
    keys = np.asarray(customers, dtype=object)
    if keys.ndim != 1 or len(keys) != len(df):
        raise ContractError(
            "The 'customers' parameter of partition_frame must hold one customer key per row "
            f"of the frame ({len(df)}). Got {keys.shape[0] if keys.ndim else 0} instead."
        )
    codes, _ = pd.factorize(pd.Series(keys), use_na_sentinel=True)
    return codes.astype(np.int64)


def _column_groups(values: pd.Series, column: str, n_partners: int) -> list[list[str]]:
    """Balanced groups of the values of ``column`` (by units), one per partner."""
    counts = values.value_counts(sort=False)
    if len(counts) < n_partners:
        raise ContractError(
            f"The 'n_partners' parameter of partition_frame must be at most the number of "
            f"distinct values of column {column!r} ({len(counts)}). Got {n_partners} instead. "
            "Use fewer partners, another column, or the 'iid' or 'dirichlet' rule."
        )
    return _greedy_groups(counts, n_partners)


def _iid_owner(n_units: int, n_partners: int, rng: np.random.Generator) -> np.ndarray:
    """Partners of a seeded shuffle of the units cut into parts differing by at most one."""
    owner = np.empty(n_units, dtype=np.int64)
    for partner, chunk in enumerate(np.array_split(rng.permutation(n_units), n_partners)):
        owner[chunk] = partner
    return owner


def _dirichlet_owner(labels: np.ndarray, alpha: float, n_partners: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Spread each label value's units over partners with Dirichlet(alpha) proportions."""
    owner = np.empty(len(labels), dtype=np.int64)
    for label in sorted(set(labels.tolist())):
        positions = rng.permutation(np.flatnonzero(labels == label))
        shares = rng.dirichlet(np.full(n_partners, alpha))
        cuts = np.floor(np.cumsum(shares)[:-1] * len(positions)).astype(np.int64)
        for partner, chunk in enumerate(np.split(positions, cuts)):
            owner[chunk] = partner
    return owner
