"""Contract expressions cannot run code: only the allow-listed grammar is accepted.

The ``[customers]`` expressions are written by the coordinator and run at every partner, so
anything beyond column arithmetic (attribute access, calls of unlisted names, ...) would be
remote code execution. Each escape attempt must be refused with a ContractError naming the
offending part, when the contract is loaded and again when a table is aggregated.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedprofile.contract.aggregation import (
    Aggregate,
    CustomerAggregation,
    aggregate_customers,
    parse_customers,
)
from fedprofile.contract.expressions import MAX_DEPTH, MAX_LENGTH, parse_expression
from fedprofile.errors import ContractError, DataError
from fedprofile.presets.datasets import SPEC_DIR

# (expression, a part of it the error must quote, what the error must say)
ESCAPES = [
    ("qty.__class__", "qty.__class__", "attribute access"),
    ("qty.to_csv('pwned.csv')", "qty.to_csv", "attribute access"),
    ("price.astype('str')", "price.astype", "attribute access"),
    ("().__class__.__bases__[0].__subclasses__()", "__subclasses__", "is not allowed"),
    ("__builtins__", "__builtins__", "names starting with '_'"),
    ("__import__('os').system('id')", "__import__('os').system", "attribute access"),
    ("__import__('os')", "__import__", "function '__import__' is not allowed"),
    ("eval('1 + 1')", "eval", "function 'eval' is not allowed"),
    ("exec('import os')", "exec", "function 'exec' is not allowed"),
    ("compile('1', 'f', 'eval')", "compile", "function 'compile' is not allowed"),
    ("open('/etc/passwd')", "open", "function 'open' is not allowed"),
    ("getattr(qty, 'to_csv')", "getattr", "function 'getattr' is not allowed"),
    ("abs(qty)(1)", "abs(qty)", "only the listed functions may be called"),
    ("qty[0]", "qty[0]", "subscripts"),
    ("qty['a']", "qty['a']", "subscripts"),
    ("[x for x in qty]", "[x for x in qty]", "comprehensions"),
    ("{x for x in qty}", "{x for x in qty}", "comprehensions"),
    ("{x: 1 for x in qty}", "{x: 1 for x in qty}", "comprehensions"),
    ("sum(x for x in qty)", "sum", "function 'sum' is not allowed"),
    ("abs(x for x in qty)", "x for x in qty", "comprehensions"),
    ("lambda: 1", "lambda: 1", "lambdas"),
    ("(lambda: 1)()", "lambda: 1", "only the listed functions"),
    ("import os", "import os", "not a valid expression"),
    ("f'{qty}'", "f'{qty}'", "f-strings"),
    ("(x := qty)", "x := qty", "assignment (:=)"),
    ("abs(*qty)", "*qty", "starred"),
    ("clip(qty, lo=0, hi=1)", "clip(qty, lo=0, hi=1)", "keyword arguments"),
    ("qty if price else 0", "qty if price else 0", "use where(c, x, y)"),
    ("qty is None", "qty is None", "the operator Is"),
    ("qty @ price", "qty @ price", "the operator MatMult"),
    ("qty << 40", "qty << 40", "the operator LShift"),
    ("{'a': qty}", "{'a': qty}", "dictionaries"),
    ("(qty, price)", "(qty, price)", "tuples"),
    ("b'bytes'", "b'bytes'", "bytes literals"),
    ("None", "None", "NoneType literals"),
    ("1j * qty", "1j", "complex literals"),
    ("'a' * 1000000000", "'a'", "arithmetic on text"),
    ("qty * 99999999999999999999999", "99999999999999999999999", "too large"),
    ("abs", "abs", "is a function"),
    ("qty in price", "price", "'in' needs a list of literals"),
    ("abs(qty, price)", "abs(qty, price)", "abs() takes 1 argument"),
    ("startswith(sku, sku)", "sku", "startswith() needs a string prefix"),
    ("qty; import os", "qty; import os", "not a valid expression"),
    ("qty\x00", "qty", "not a valid expression"),
]


@pytest.mark.parametrize(("expression", "part", "problem"), ESCAPES,
                         ids=[e[0][:40] for e in ESCAPES])
def test_escape_attempt_is_refused_naming_the_offending_part(expression, part,
                                                             problem) -> None:
    with pytest.raises(ContractError) as info:
        parse_expression(expression)
    message = str(info.value)
    assert problem in message
    assert part in message


def test_too_long_expression_is_refused() -> None:
    # Prepare: a long sum of columns (also a cheap way to make a huge tree)
    expression = "qty + " * (MAX_LENGTH // 6 + 1) + "qty"

    # Execute / Assert
    with pytest.raises(ContractError, match=rf"at most {MAX_LENGTH} are allowed"):
        parse_expression(expression)


@pytest.mark.parametrize("expression", [
    "-" * (MAX_DEPTH + 5) + "qty",
    "abs(" * (MAX_DEPTH + 5) + "qty" + ")" * (MAX_DEPTH + 5),
    " + ".join(["qty"] * (MAX_DEPTH + 5)),
], ids=["unary-chain", "nested-calls", "long-sum"])
def test_deeply_nested_expression_is_refused(expression) -> None:
    with pytest.raises(ContractError, match=f"nested more than {MAX_DEPTH} levels"):
        parse_expression(expression)


def test_nesting_beyond_the_python_parser_is_refused() -> None:
    with pytest.raises(ContractError, match="not a valid expression"):
        parse_expression("(" * 400 + "qty" + ")" * 400)


# --- the contract names where the bad expression is -----------------------------------------

SECTION: dict[str, Any] = {
    "id": "cid",
    "rows": {"amount": "qty * price"},
    "aggregates": {"spend": {"function": "sum", "source": "amount", "where": "qty > 0"}},
    "derived": {"half": "spend / 2"},
}
PAYLOAD = "qty.to_csv('pwned.csv')"


@pytest.mark.parametrize(("path", "where"), [
    (("rows", "amount"), r"\[customers.rows\] amount"),
    (("aggregates", "spend", "where"), r"\[customers.aggregates.spend\] where"),
    (("aggregates", "spend", "source"), r"\[customers.aggregates.spend\] source"),
    (("derived", "half"), r"\[customers.derived\] half"),
], ids=["row", "where", "source", "derived"])
def test_contract_with_an_escape_fails_when_loaded_naming_its_place(path, where) -> None:
    # Prepare
    section = copy.deepcopy(SECTION)
    target = section
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = PAYLOAD

    # Execute / Assert
    with pytest.raises(ContractError, match=rf"Spec evil.toml: {where}: 'qty.to_csv'.*"
                                            "attribute access is not allowed"):
        parse_customers(section, "evil.toml")


def test_a_spec_built_without_parsing_still_cannot_run_code(tmp_path: Path) -> None:
    # Prepare: a spec object that skipped parse_customers; with pandas' eval this expression
    # wrote a file at the partner
    target = tmp_path / "pwned.csv"
    spec = CustomerAggregation(id="cid", rows={"x": f"qty.to_csv({str(target)!r})"},
                               aggregates=(Aggregate(name="n", function="count"),))
    frame = pd.DataFrame({"cid": ["a", "b"], "qty": [1, 2]})

    # Execute / Assert
    with pytest.raises(DataError, match=r"row column 'x' = .* is not allowed: .*attribute"):
        aggregate_customers(frame, spec, source="partner.csv")
    assert not target.exists()


def test_arithmetic_on_a_text_column_is_a_data_error() -> None:
    # Prepare: "sku * 10**9" would build gigabyte strings per row with pandas' eval
    spec = CustomerAggregation(id="cid", rows={"big": "sku * 1000000000"},
                               aggregates=(Aggregate(name="n", function="count"),))
    frame = pd.DataFrame({"cid": ["a"], "sku": ["secret-sku-value"]})

    # Execute / Assert
    with pytest.raises(DataError, match="Mult needs numbers, not text") as info:
        aggregate_customers(frame, spec)
    assert "secret-sku-value" not in str(info.value)


def test_scalar_powers_stay_fixed_width_and_fast() -> None:
    # 9 ** 9 ** 9 as Python integers would run for hours; numpy int64 wraps at once
    value = parse_expression("9 ** 9 ** 9").evaluate(pd.DataFrame({"x": [1]}))
    assert isinstance(value, np.integer)


# --- valid expressions give what pandas gives --------------------------------------------------


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 200
    return pd.DataFrame({
        "qty": rng.integers(-5, 20, n),
        "price": rng.uniform(0.0, 50.0, n).round(2),
        "sku": rng.choice(["a", "b", "c"], n),
        "flag": rng.random(n) < 0.3,
        "gappy": np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 9, n)),
    })


PANDAS_SAME = [
    "qty * price", "qty + price - 3", "-qty", "qty / (price + 1)", "qty // 3", "qty % 4",
    "price ** 2", "qty > 0", "qty >= 0", "price < 10.5", "sku == 'a'", "sku != 'b'",
    "(qty > 0) & (price > 5)", "(qty > 0) | flag", "~flag", "not flag",
    "(qty > 0) and (price < 20)", "(qty > 0) or flag", "0 < qty <= 10",
    "sku in ['a', 'c']", "sku not in ['a']", "abs(qty)", "qty * 2.5 + gappy",
    "gappy > 3", "True", "2 * 3",
]


@pytest.mark.parametrize("expression", PANDAS_SAME)
def test_valid_expression_gives_exactly_what_pandas_gives(expression) -> None:
    # Prepare
    frame = _frame()

    # Execute
    ours = parse_expression(expression).evaluate(frame)
    theirs = frame.eval(expression, engine="python")

    # Assert
    if isinstance(theirs, pd.Series):
        pd.testing.assert_series_equal(pd.Series(ours, index=frame.index), theirs,
                                       check_names=False)
    else:
        assert ours == theirs


@pytest.mark.parametrize(("expression", "numpy_equivalent"), [
    ("sqrt(price)", lambda f: np.sqrt(f["price"])),
    ("log1p(price)", lambda f: np.log1p(f["price"])),
    ("log(price + 1)", lambda f: np.log(f["price"] + 1)),
    ("exp(qty / 10)", lambda f: np.exp(f["qty"] / 10)),
    ("clip(qty, 0, 10)", lambda f: f["qty"].clip(0, 10)),
    ("where(qty > 0, price, 0)", lambda f: f["price"].where(f["qty"] > 0, 0.0)),
    ("isna(gappy)", lambda f: f["gappy"].isna()),
    ("notna(gappy)", lambda f: f["gappy"].notna()),
    ("fillna(gappy, 0)", lambda f: f["gappy"].fillna(0)),
    ("startswith(sku, 'a')", lambda f: f["sku"].astype("str").str.startswith("a")),
])
def test_functions_match_their_pandas_counterparts(expression, numpy_equivalent) -> None:
    frame = _frame()
    pd.testing.assert_series_equal(parse_expression(expression).evaluate(frame),
                                   numpy_equivalent(frame), check_names=False)


def test_backticks_name_a_column_with_spaces() -> None:
    # Prepare
    frame = pd.DataFrame({"Unit Price": [1.5, 2.0], "qty": [2, 3]})

    # Execute
    out = parse_expression("qty * `Unit Price`").evaluate(frame)

    # Assert
    assert out.tolist() == [3.0, 6.0]
    assert parse_expression("qty * `Unit Price`").columns == {"qty", "Unit Price"}


def _shipped_customer_sections() -> list[tuple[str, dict[str, Any]]]:
    sections = []
    for path in sorted(SPEC_DIR.glob("*.toml")):
        section = tomllib.loads(path.read_text()).get("customers")
        if section:
            sections.append((path.name, section))
    return sections


# The one shipped expression pandas cannot read as written: its pandas form
PANDAS_FORM = {"startswith(InvoiceNo, 'C')": "InvoiceNo.astype('str').str.startswith('C')"}


def test_shipped_contracts_have_customer_expressions() -> None:
    assert _shipped_customer_sections(), "no shipped contract with a [customers] section"


@pytest.mark.parametrize(("name", "section"), _shipped_customer_sections(),
                         ids=[n for n, _ in _shipped_customer_sections()])
def test_shipped_contract_expressions_give_what_pandas_gives(name, section) -> None:
    # Prepare: retail-like lines, invoice numbers as text and as integers
    rng = np.random.default_rng(3)
    n = 300
    invoices = rng.integers(500000, 600000, n).astype(str).astype(object)
    invoices[rng.random(n) < 0.2] = "C536379"
    rows = pd.DataFrame({"InvoiceNo": invoices, "Quantity": rng.integers(-3, 12, n),
                         "UnitPrice": rng.uniform(-1.0, 9.0, n).round(2),
                         "StockCode": rng.choice(["A", "B"], n)})
    as_int = rows.loc[~rows["InvoiceNo"].str.startswith("C")].assign(
        InvoiceNo=lambda f: f["InvoiceNo"].astype("int64"))
    parse_customers(section, name)  # the shipped contract loads
    checked = 0

    for frame in (rows, as_int):
        ours, theirs = frame.copy(), frame.copy()
        # Execute / Assert: row columns in order, each built on the previous ones
        for column, expression in section.get("rows", {}).items():
            ours[column] = parse_expression(expression).evaluate(ours)
            theirs[column] = theirs.eval(PANDAS_FORM.get(expression, expression),
                                         engine="python")
            pd.testing.assert_series_equal(ours[column], theirs[column])
            checked += 1
        for decl in section["aggregates"].values():
            for key in ("source", "where"):
                expression = decl.get(key)
                if expression:
                    pd.testing.assert_series_equal(
                        pd.Series(parse_expression(expression).evaluate(ours)),
                        pd.Series(theirs.eval(expression, engine="python")))
                    checked += 1
    aggregates = pd.DataFrame({a: rng.uniform(1, 100, 50) for a in section["aggregates"]})
    for expression in section.get("derived", {}).values():
        pd.testing.assert_series_equal(parse_expression(expression).evaluate(aggregates),
                                       aggregates.eval(expression, engine="python"))
        checked += 1
    assert checked > 0
