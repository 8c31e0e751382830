"""Contract expressions: a small allow-listed language evaluated column-wise on a table.

The ``[customers]`` section of a contract (written by the coordinator, run at every
partner) holds expressions over columns: row columns, row filters, aggregate sources and
derived columns. They are parsed with :mod:`ast` and only the node types listed here are
accepted; evaluation walks the tree with pandas/numpy operations on whole columns. User text
is never passed to ``eval``, ``exec`` or pandas ``DataFrame.eval``.

Grammar
-------
- column names (``Quantity``; a name with spaces or symbols in backticks: ```Unit Price```)
- numbers, strings, ``True``/``False``
- ``+ - * / // % **`` (numbers only), unary ``-`` and ``+``
- ``== != < <= > >=`` (chains such as ``0 < x <= 5`` allowed), ``x in ("a", "b")``,
  ``x not in (...)`` with a list of literals
- ``and or not`` and ``& | ~``, all element-wise
- the functions in :data:`FUNCTIONS`, positional arguments only

>>> import pandas as pd
>>> frame = pd.DataFrame({"qty": [2, -1], "price": [1.5, 2.0]})
>>> parse_expression("qty * price").evaluate(frame).tolist()
[3.0, -2.0]
>>> parse_expression("(qty > 0) and not price > 1.5").evaluate(frame).tolist()
[True, False]
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import numpy as np
import pandas as pd

from fedprofile.contract.expression_grammar import (
    _ARITHMETIC,
    _BACKTICK,
    _BITWISE,
    _COMPARE,
    _DESCRIPTIONS,
    _QUOTED,
    FUNCTIONS,
    GRAMMAR,
    MAX_DEPTH,
    MAX_LENGTH,
    _number,
    _series,
)
from fedprofile.errors import ContractError, DataError

__all__ = ["FUNCTIONS", "MAX_DEPTH", "MAX_LENGTH", "Expression", "parse_expression"]


@dataclass(frozen=True)
class Expression:
    """A validated contract expression.

    Attributes
    ----------
    text : str
        The expression as written in the contract.
    columns : frozenset of str
        The column names it reads.
    """

    text: str
    tree: ast.expr
    quoted: tuple[str, ...]
    columns: frozenset[str]

    def evaluate(self, frame: pd.DataFrame) -> Any:
        """Evaluate column-wise on ``frame``.

        Returns
        -------
        pandas.Series or scalar
            A Series aligned with ``frame.index`` (a scalar for a constant expression).

        Raises
        ------
        DataError
            If a column is missing or an operation does not apply to its values (the
            message names columns and operations, never values).
        """
        with np.errstate(all="ignore"):
            return _Evaluator(frame, self.quoted).visit(self.tree)


class _Validator:
    """Checks every node against the allow-list; collects column names."""

    def __init__(self, text: str, quoted: tuple[str, ...]) -> None:
        self.text, self.quoted, self.columns = text, quoted, set[str]()

    def fail(self, node: ast.AST, problem: str) -> ContractError:
        part = ast.get_source_segment(self.text, node) or type(node).__name__
        for i, name in enumerate(self.quoted):
            part = part.replace(_QUOTED.format(i), f"`{name}`")
        if len(part) > 60:
            part = part[:57] + "..."
        return ContractError(f"{part!r}: {problem} (allowed: {GRAMMAR}).")

    def check(self, node: ast.AST, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(node, f"nested more than {MAX_DEPTH} levels deep")
        children: list[ast.AST]
        if isinstance(node, ast.Name):
            self._name(node)
            children = []
        elif isinstance(node, ast.Constant):
            self._constant(node)
            children = []
        elif isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC | _BITWISE:
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, str) \
                        and type(node.op) in _ARITHMETIC:
                    raise self.fail(side, "arithmetic on text is not allowed")
            children = [node.left, node.right]
        elif isinstance(node, ast.UnaryOp) and isinstance(
                node.op, ast.USub | ast.UAdd | ast.Invert | ast.Not):
            children = [node.operand]
        elif isinstance(node, ast.BoolOp):
            children = list(node.values)
        elif isinstance(node, ast.Compare):
            children = [node.left]
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.In | ast.NotIn):
                    self._literal_list(right)
                elif type(op) not in _COMPARE:
                    raise self.fail(node, f"the operator {type(op).__name__} is not allowed")
                else:
                    children.append(right)
        elif isinstance(node, ast.Call):
            self._call(node)
            children = list(node.args)
        else:
            description = _DESCRIPTIONS.get(type(node), type(node).__name__)
            if isinstance(node, ast.BinOp | ast.UnaryOp):
                description = f"the operator {type(node.op).__name__}"
            raise self.fail(node, f"{description} is not allowed")
        for child in children:
            self.check(child, depth + 1)

    def _name(self, node: ast.Name) -> None:
        match = re.fullmatch(r"_q(\d+)_", node.id)
        if match and int(match.group(1)) < len(self.quoted):
            self.columns.add(self.quoted[int(match.group(1))])
        elif node.id.startswith("_"):
            raise self.fail(node, "names starting with '_' are not allowed")
        elif node.id in FUNCTIONS:
            raise self.fail(node, f"{node.id!r} is a function; call it as {node.id}(...)")
        else:
            self.columns.add(node.id)

    def _constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool | str | float):
            return
        if isinstance(value, int):
            if abs(value) > np.iinfo(np.int64).max:
                raise self.fail(node, "the number is too large")
            return
        raise self.fail(node, f"{type(value).__name__} literals are not allowed")

    def _literal_list(self, node: ast.AST) -> None:
        if not isinstance(node, ast.Tuple | ast.List) or not all(
                isinstance(e, ast.Constant) for e in node.elts):
            raise self.fail(node, "'in' needs a list of literals, e.g. x in (\"a\", \"b\")")
        for element in node.elts:
            assert isinstance(element, ast.Constant)  # checked above
            self._constant(element)

    def _call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else None
            if isinstance(node.func, ast.Attribute):
                raise self.fail(node.func, "attribute access is not allowed")
            if called is None:
                raise self.fail(node.func, "only the listed functions may be called")
            raise self.fail(node.func, f"the function {called!r} is not allowed")
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed")
        starred = [a for a in node.args if isinstance(a, ast.Starred)]
        if starred:
            raise self.fail(starred[0], "starred arguments are not allowed")
        arity = FUNCTIONS[node.func.id][0]
        if len(node.args) != arity:
            raise self.fail(node, f"{node.func.id}() takes {arity} argument(s)")
        if node.func.id == "startswith" and not (
                isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            raise self.fail(node.args[1], "startswith() needs a string prefix")


class _Evaluator:
    """Walks a validated tree with column-wise pandas/numpy operations."""

    def __init__(self, frame: pd.DataFrame, quoted: tuple[str, ...]) -> None:
        self.frame, self.quoted = frame, quoted

    def visit(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Name):
            return self._column(node.id)
        if isinstance(node, ast.Constant):
            return _scalar(node.value)
        if isinstance(node, ast.BinOp):
            left, right = self.visit(node.left), self.visit(node.right)
            if type(node.op) in _BITWISE:
                return _BITWISE[type(node.op)](left, right)
            symbol = type(node.op).__name__
            return _ARITHMETIC[type(node.op)](_number(left, symbol), _number(right, symbol))
        if isinstance(node, ast.UnaryOp):
            value = self.visit(node.operand)
            if isinstance(node.op, ast.Not | ast.Invert):
                return ~value
            return -_number(value, "-") if isinstance(node.op, ast.USub) else \
                +_number(value, "+")
        if isinstance(node, ast.BoolOp):
            combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
            result = self.visit(node.values[0])
            for value in node.values[1:]:
                result = combine(result, self.visit(value))
            return result
        if isinstance(node, ast.Compare):
            return self._compare(node)
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        args = [self.visit(a) for a in node.args]
        return FUNCTIONS[node.func.id][1](self.frame.index, *args)

    def _column(self, name: str) -> pd.Series:
        match = re.fullmatch(r"_q(\d+)_", name)
        if match and int(match.group(1)) < len(self.quoted):
            name = self.quoted[int(match.group(1))]
        if name not in self.frame.columns:
            raise DataError(f"unknown column {name!r}")
        return self.frame[name]

    def _compare(self, node: ast.Compare) -> Any:
        left, result = self.visit(node.left), None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                assert isinstance(comparator, ast.Tuple | ast.List)
                members = [cast(ast.Constant, c).value for c in comparator.elts]  # literals
                step = _series(left, self.frame.index).isin(members)
                right = left
                step = ~step if isinstance(op, ast.NotIn) else step
            else:
                right = self.visit(comparator)
                step = _COMPARE[type(op)](left, right)
            result = step if result is None else result & step
            left = right
        return result


def _scalar(value: Any) -> Any:
    """Fixed-width numpy scalars, so arithmetic on literals cannot grow without bound."""
    if isinstance(value, bool):
        return np.bool_(value)
    if isinstance(value, int):
        return np.int64(value)
    if isinstance(value, float):
        return np.float64(value)
    return value


@lru_cache(maxsize=512)
def parse_expression(text: str) -> Expression:
    """Parse and validate a contract expression.

    Parameters
    ----------
    text : str
        The expression, e.g. ``"Quantity * UnitPrice"`` or ``"(qty > 0) & ~cancelled"``.

    Returns
    -------
    Expression
        The validated expression, ready to :meth:`Expression.evaluate`.

    Raises
    ------
    ContractError
        If the text is too long, does not parse, is nested too deeply or uses anything
        outside the grammar; the message quotes the offending part.
    """
    if not isinstance(text, str):
        raise ContractError("an expression must be a string.")
    if len(text) > MAX_LENGTH:
        raise ContractError(f"the expression is {len(text)} characters long; at most "
                            f"{MAX_LENGTH} are allowed.")
    quoted = tuple(_BACKTICK.findall(text))
    counter = iter(range(len(quoted)))
    source = _BACKTICK.sub(lambda _: _QUOTED.format(next(counter)), text)
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        detail = getattr(exc, "msg", None) or type(exc).__name__
        raise ContractError(f"{text[:60]!r} is not a valid expression ({detail}); write "
                            "a column name with spaces or symbols in backticks, e.g. "
                            "`Unit Price`.") from None
    validator = _Validator(source.strip(), quoted)
    validator.check(tree.body)
    return Expression(text=text, tree=tree.body, quoted=quoted,
                      columns=frozenset(validator.columns))
