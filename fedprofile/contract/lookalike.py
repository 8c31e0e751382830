"""Lookalike audiences: the seed audience and the "seed vs everyone" design rows.

The seed owner names its seed as one of its own columns (members where the value is true,
``yes`` or non-zero), an expression over its columns (``y == "yes"``), or a local file of
its own pseudonymised customer ids. Every partner builds ``Z = [x, 1]`` over the contract's
features, leaving out features read from a column the seed rule reads (else the model would
only relearn the rule); the label is 1 for the seed owner's seed members and 0 for every
other customer of the federation. The same seeded, data-independent hold-out as the response
models keeps a share of the seed and of the others out of training.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedprofile.contract.customers import ID_COLUMN
from fedprofile.contract.design import DesignData
from fedprofile.contract.expressions import parse_expression
from fedprofile.contract.features import transform_frame
from fedprofile.contract.spec import FeatureSpec, NumericFeature
from fedprofile.contract.suggest import did_you_mean
from fedprofile.contract.targets import holdout_mask
from fedprofile.errors import ContractError, DataError

__all__ = ["SeedAudience", "lookalike_design", "lookalike_mask", "lookalike_names",
           "lookalike_norm_bound", "read_seed_file", "seed_labels"]

_TRUE = frozenset({"1", "true", "yes", "y", "t"})


@dataclass(frozen=True)
class SeedAudience:
    """Who owns the seed and how it is defined (exactly one of column, expr, file).

    ``file`` means the seed owner's own ``seed-file`` node setting: the path never leaves
    the seed owner, only the fact that a file defines the seed.
    """

    partner: str
    column: str = ""
    expr: str = ""
    file: bool = False

    def __post_init__(self) -> None:
        if not self.partner:
            raise ContractError("A lookalike run needs a seed partner (the partner whose "
                                "customers form the seed audience).")
        given = [bool(self.column), bool(self.expr), self.file]
        if sum(given) != 1:
            raise ContractError("Define the seed audience with exactly one of a seed column, "
                                "a seed expression or the seed owner's seed file.")
        if self.expr:
            parse_expression(self.expr)  # a malformed expression fails here, with its reason

    @property
    def columns(self) -> frozenset[str]:
        """The seed owner's columns the rule reads."""
        if self.column:
            return frozenset({self.column})
        return parse_expression(self.expr).columns if self.expr else frozenset()

    def describe(self) -> str:
        """The rule in words (no member, no path)."""
        rule = (f"column {self.column!r}" if self.column else
                f"expression {self.expr!r}" if self.expr else "its local seed file")
        return f"customers of {self.partner!r} selected by {rule}"


def lookalike_mask(spec: FeatureSpec, seed: SeedAudience) -> np.ndarray:
    """Scaled coordinates used as predictors: those not read from a column of the rule."""
    used = seed.columns
    keep = [(f.column or f.name) not in used for f in spec.features for _ in range(f.width)]
    return np.asarray(keep, dtype=bool)


def lookalike_names(spec: FeatureSpec, seed: SeedAudience) -> list[str]:
    """Names of the design columns (the last one: intercept)."""
    mask = lookalike_mask(spec, seed)
    return [*(n for n, keep in zip(spec.slot_names, mask, strict=True) if keep), "intercept"]


def lookalike_norm_bound(spec: FeatureSpec, seed: SeedAudience) -> float:
    """Public bound on the L2 norm of a design row (from the contract, never the data)."""
    used = seed.columns
    squares = [f.weight**2 / 4 if isinstance(f, NumericFeature) else f.weight**2
               for f in spec.features if (f.column or f.name) not in used]
    return math.sqrt(sum(squares) + 1.0)


def _truthy(values: pd.Series) -> pd.Series:
    if values.dtype == bool:
        return values
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.notna().all():
        return numbers != 0
    return values.notna() & values.astype(str).str.strip().str.casefold().isin(_TRUE)


def seed_labels(table: pd.DataFrame, seed: SeedAudience, *,
                members: Collection[str] | None = None,
                source: str = "partner table") -> np.ndarray:
    """Which customers of the seed owner's table are in the seed (a boolean array).

    ``members`` are the pseudonymised ids of the seed file (``seed.file``).

    Raises
    ------
    DataError
        If the seed column or a column of the expression does not exist, the expression is
        not a per-customer condition, or the seed file holds pseudonyms that are not
        customers of the table (the message gives their count, never an id).
    """
    if seed.column:
        if seed.column not in table.columns:
            raise DataError(f"{source}: the seed column {seed.column!r} does not exist"
                            f"{did_you_mean(seed.column, table.columns)}.")
        return _truthy(table[seed.column]).to_numpy(dtype=bool)
    if seed.expr:
        missing = sorted(seed.columns - set(table.columns))
        if missing:
            hints = "".join(did_you_mean(c, table.columns) for c in missing)
            raise DataError(f"{source}: the seed expression {seed.expr!r} reads column(s) "
                            f"{missing} that do not exist{hints}.")
        value = parse_expression(seed.expr).evaluate(table)
        if not isinstance(value, pd.Series):
            raise DataError(f"The seed expression {seed.expr!r} is a constant; it must "
                            "select customers by their columns (e.g. y == \"yes\").")
        return value.fillna(False).astype(bool).to_numpy()
    if members is None:
        raise DataError(f"{source}: the seed is this partner's seed file, but its node config "
                        "names none (set 'seed-file').")
    if ID_COLUMN not in table.columns:
        raise DataError(f"{source}: a seed file lists pseudonymised ids, but this contract "
                        "has no [identity] section, so customers have none.")
    ids = table[ID_COLUMN].astype(str)
    unknown = len(set(members) - set(ids))
    if unknown:
        raise DataError(f"{unknown} of the {len(set(members))} pseudonyms in the seed file "
                        "are not customers of this partner (pseudonymised with another key, "
                        "or not in its table); nothing was released.")
    return ids.isin(set(members)).to_numpy()


def read_seed_file(path: str | Path) -> set[str]:
    """The pseudonymised ids of a seed file: a ``pid`` column, or the file's only column.

    CSV (or text, one id a line) or Parquet. Raw identifiers are never accepted here: the
    file holds the pseudonyms the partner's own pseudonymisation wrote.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("The seed file named by the node config 'seed-file' does not exist.")
    try:
        frame = (pd.read_parquet(p) if p.suffix.lower() == ".parquet"
                 else pd.read_csv(p, dtype=str, header=None, keep_default_na=False))
    except (OSError, ValueError) as exc:
        raise DataError(f"The seed file cannot be read ({type(exc).__name__}).") from None
    if p.suffix.lower() != ".parquet":  # a header row is optional in a text file
        header = [str(v).strip() for v in frame.iloc[0]] if len(frame) else []
        if ID_COLUMN in header:
            frame = frame.iloc[1:].set_axis(header, axis=1)
    if ID_COLUMN not in frame.columns and len(frame.columns) != 1:
        raise DataError(f"The seed file must have a {ID_COLUMN!r} column or a single column "
                        f"of pseudonymised ids; it has {len(frame.columns)} columns.")
    column = frame[ID_COLUMN] if ID_COLUMN in frame.columns else frame.iloc[:, 0]
    return {str(v).strip() for v in column if str(v).strip()}


def lookalike_design(table: pd.DataFrame, spec: FeatureSpec, seed: SeedAudience,
                     labels: np.ndarray | None, *, holdout: float, holdout_seed: int,
                     mapping: Mapping[str, str] | None = None,
                     source: str = "partner table") -> DesignData:
    """A partner's "seed vs everyone" design rows: training and held-out parts.

    ``labels`` are the seed owner's :func:`seed_labels` (None at every other partner: all
    its customers are negatives).
    """
    fm = transform_frame(table, spec, mapping=mapping, source=source)
    x = np.asarray(fm.matrix, dtype=float)[:, lookalike_mask(spec, seed)]
    z = np.hstack([x, np.ones((len(x), 1))])
    y = (np.zeros(len(z)) if labels is None
         else np.asarray(labels, dtype=float)[np.asarray(fm.keep)])
    test = holdout_mask(len(z), fraction=holdout, seed=holdout_seed)
    if (~test).sum() == 0:
        raise DataError(f"{source}: no customer is left for training the lookalike model.")
    return DesignData(z_train=z[~test], y_train=y[~test], z_test=z[test], y_test=y[test])
