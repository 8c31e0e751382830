"""What a contract expression may contain: its limits, functions and operators.

The vocabulary that :mod:`fedprofile.contract.expressions` validates against and evaluates
with: the size limits, the whitelisted functions (vectorised over pandas columns), the
arithmetic, bitwise and comparison operators, and the names of refused constructs.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from fedprofile.errors import DataError

MAX_LENGTH = 1000
"""Longest accepted expression, in characters."""
MAX_DEPTH = 50
"""Deepest accepted nesting of the expression's syntax tree."""

_BACKTICK = re.compile(r"`([^`]*)`")
_QUOTED = "_q{}_"   # placeholder for a backtick-quoted column; user names cannot start with _


def _number(value: Any, what: str) -> Any:
    if isinstance(value, str) or (isinstance(value, pd.Series) and (
            pd.api.types.is_object_dtype(value) or pd.api.types.is_string_dtype(value))):
        raise DataError(f"{what} needs numbers, not text")
    return value


def _series(value: Any, index: pd.Index) -> pd.Series:
    return value if isinstance(value, pd.Series) else pd.Series(value, index=index)


def _mask(value: Any, index: pd.Index) -> pd.Series:
    return _series(value, index).fillna(False).astype(bool)


def _where(index: pd.Index, cond: Any, yes: Any, no: Any) -> pd.Series:
    return _series(yes, index).where(_mask(cond, index), _series(no, index))


def _startswith(index: pd.Index, values: Any, prefix: Any) -> pd.Series:
    return _series(values, index).astype("str").str.startswith(prefix)


def _unary(function: Callable[[Any], Any], name: str) -> Callable[..., Any]:
    return lambda index, x: function(_number(x, f"{name}()"))


# name -> (number of positional arguments, implementation(index, *args))
FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    "abs": (1, _unary(np.abs, "abs")),
    "sqrt": (1, _unary(np.sqrt, "sqrt")),
    "log": (1, _unary(np.log, "log")),
    "log1p": (1, _unary(np.log1p, "log1p")),
    "exp": (1, _unary(np.exp, "exp")),
    "clip": (3, lambda index, x, lo, hi: _series(_number(x, "clip()"), index).clip(lo, hi)),
    "where": (3, _where),
    "isna": (1, lambda index, x: _series(x, index).isna()),
    "notna": (1, lambda index, x: _series(x, index).notna()),
    "fillna": (2, lambda index, x, value: _series(x, index).fillna(value)),
    "startswith": (2, _startswith),
}
"""Allowed functions: name -> (argument count, implementation)."""

_ARITHMETIC: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow}
_BITWISE: dict[type, Callable[[Any, Any], Any]] = {ast.BitAnd: operator.and_,
                                                   ast.BitOr: operator.or_}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge}
_DESCRIPTIONS = {
    ast.Attribute: "attribute access", ast.Subscript: "subscripts", ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions", ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions", ast.GeneratorExp: "comprehensions",
    ast.JoinedStr: "f-strings", ast.FormattedValue: "f-strings",
    ast.NamedExpr: "assignment (:=)", ast.Starred: "starred arguments",
    ast.IfExp: "'x if c else y' (use where(c, x, y))", ast.Await: "await",
    ast.Yield: "yield", ast.YieldFrom: "yield", ast.Dict: "dictionaries", ast.Set: "sets",
    ast.List: "lists (only after 'in')", ast.Tuple: "tuples (only after 'in')",
    ast.Slice: "slices"}
GRAMMAR = ("column names, numbers, strings, + - * / // % **, comparisons, 'in (...)', "
           "and/or/not, & | ~ and the functions " + ", ".join(sorted(FUNCTIONS)))
"""One-line summary of the grammar, used in error messages."""
