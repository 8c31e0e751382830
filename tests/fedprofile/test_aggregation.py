"""Per-customer aggregation of transaction rows, and identities pseudonymised first."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedprofile.contract.aggregation import (
    CustomerAggregation,
    aggregate_customers,
    parse_customers,
)
from fedprofile.contract.customers import customer_table
from fedprofile.contract.parser import load_spec, parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import ContractError, DataError
from fedprofile.presets.datasets import SPEC_DIR
from fedprofile.privacy.keys import generate_key
from fedprofile.privacy.pseudonym import Pseudonymizer

CUSTOMERS: dict[str, Any] = {
    "id": "cid",
    "date": "date",
    "snapshot": "2020-01-10",
    "rows": {"amount": "qty * price"},
    "aggregates": {
        "lines": {"function": "count"},
        "spend": {"function": "sum", "source": "amount", "where": "qty > 0"},
        "mean_price": {"function": "mean", "source": "price"},
        "min_qty": {"function": "min", "source": "qty"},
        "max_qty": {"function": "max", "source": "qty"},
        "products": {"function": "distinct_count", "source": "sku"},
        "recency": {"function": "recency_days"},
        "tenure": {"function": "tenure_days"},
    },
    "derived": {"spend_per_line": "spend / lines"},
}


def _aggregation(**changes: Any) -> CustomerAggregation:
    section = copy.deepcopy(CUSTOMERS)
    section.update(changes)
    return parse_customers(section, "test-spec.toml")


def _transactions() -> pd.DataFrame:
    return pd.DataFrame({
        "cid": ["a", "a", "a", "b", "b", None, "c"],
        "date": ["2020-01-01 08:00", "2020-01-05 10:00", "2020-01-10 09:00",
                 "2020-01-03 23:59", "2020-01-09 12:00", "2020-01-02 00:00",
                 "2020-01-07 07:00"],
        "qty": [2, -1, 5, 1, 3, 9, -2],
        "price": [1.5, 1.5, 2.0, 10.0, 4.0, 1.0, 3.0],
        "sku": ["x", "x", "y", "x", "z", "z", "y"],
    })


# --- aggregate_customers by hand --------------------------------------------------------------


def test_tiny_transaction_table_is_aggregated_by_hand() -> None:
    # Prepare: a's 2020-01-10 line is on the snapshot (ignored); the row without id is
    # ignored; c has no line with qty > 0
    spec = _aggregation()

    # Execute
    out = aggregate_customers(_transactions(), spec)

    # Assert
    assert out.index.name == "cid"
    assert sorted(out.index) == ["a", "b", "c"]
    expected = pd.DataFrame({
        "lines": [2, 2, 1],
        "spend": [3.0, 10.0 + 12.0, np.nan],            # qty * price over qty > 0
        "mean_price": [1.5, 7.0, 3.0],
        "min_qty": [-1, 1, -2],
        "max_qty": [2, 3, -2],
        "products": [1, 2, 1],
        "recency": [5.0, 1.0, 3.0],                     # snapshot day - last line's day
        "tenure": [9.0, 7.0, 3.0],                      # snapshot day - first line's day
        "spend_per_line": [1.5, 11.0, np.nan],
    }, index=pd.Index(["a", "b", "c"], name="cid"))
    pd.testing.assert_frame_equal(out.loc[["a", "b", "c"]], expected, check_dtype=False)


def test_a_customer_without_rows_matching_where_gets_a_missing_value() -> None:
    # Observed behaviour: c's "spend" is missing, not 0, so the contract's missing-value rule
    # of that feature decides (drop or impute); the simulation's reference
    # (fedprofile.presets.datasets.retail_customer_features) also leaves such customers out.
    out = aggregate_customers(_transactions(), _aggregation())
    assert np.isnan(out.loc["c", "spend"])


def test_without_a_snapshot_every_dated_row_counts() -> None:
    # Prepare
    aggregates = {"lines": {"function": "count"}, "top": {"function": "max", "source": "qty"}}
    spec = _aggregation(snapshot=None, aggregates=aggregates, derived={})

    # Execute
    out = aggregate_customers(_transactions(), spec)

    # Assert
    assert out.loc["a"].tolist() == [3, 5]


def test_aggregation_without_a_date_column() -> None:
    # Prepare
    spec = parse_customers({"id": "cid", "aggregates": {"n": {"function": "count"}}}, "t")
    frame = _transactions().drop(columns=["date"])

    # Execute
    out = aggregate_customers(frame, spec)

    # Assert
    assert out["n"].to_dict() == {"a": 3, "b": 2, "c": 1}


def test_input_frame_is_not_modified() -> None:
    # Prepare
    frame = _transactions()
    before = frame.copy()

    # Execute
    aggregate_customers(frame, _aggregation())

    # Assert
    pd.testing.assert_frame_equal(frame, before)


def test_iso_dates_with_and_without_a_time_are_all_counted() -> None:
    # Prepare: valid ISO 8601 dates; midnight written without its time, as exports often do
    frame = pd.DataFrame({"cid": ["a", "a", "a"],
                          "date": ["2020-01-01", "2020-01-05 10:00", "2020-01-08 09:30"]})
    spec = parse_customers({"id": "cid", "date": "date", "snapshot": "2020-01-10",
                            "aggregates": {"n": {"function": "count"},
                                           "recency": {"function": "recency_days"}}}, "t")

    # Execute
    out = aggregate_customers(frame, spec)

    # Assert
    assert out.loc["a"].tolist() == [3, 2.0]


# --- aggregate_customers errors ---------------------------------------------------------------


@pytest.mark.parametrize("column", ["cid", "date"])
def test_missing_id_or_date_column_raises_data_error(column) -> None:
    # Prepare
    frame = _transactions().drop(columns=[column])

    # Execute / Assert
    with pytest.raises(DataError, match=rf"partner\.csv: missing column\(s\) \['{column}'\]"):
        aggregate_customers(frame, _aggregation(), source="partner.csv")


@pytest.mark.parametrize(("changes", "match"), [
    ({"rows": {"amount": "qty * nope"}}, "row column 'amount' = 'qty \\* nope'"),
    ({"aggregates": {"spend": {"function": "sum", "source": "amount", "where": "nope > 0"}},
      "derived": {}},
     "aggregate 'spend' where = 'nope > 0'"),
    ({"aggregates": {"spend": {"function": "sum", "source": "qty * nope"}}, "derived": {}},
     "aggregate 'spend' source = 'qty \\* nope'"),
    ({"derived": {"ratio": "spend / nope"}}, "derived column 'ratio' = 'spend / nope'"),
], ids=["row-expression", "where-filter", "source-expression", "derived-expression"])
def test_bad_expression_raises_data_error_naming_it(changes, match) -> None:
    # Execute / Assert
    with pytest.raises(DataError, match=match) as info:
        aggregate_customers(_transactions(), _aggregation(**changes), source="partner.csv")
    assert "cannot be evaluated" in str(info.value)


def test_a_source_expression_is_evaluated_per_row() -> None:
    # Prepare
    aggregates = {"spend": {"function": "sum", "source": "qty * price"}}
    spec = _aggregation(aggregates=aggregates, derived={})

    # Execute
    out = aggregate_customers(_transactions(), spec)

    # Assert: a: 2 * 1.5 - 1 * 1.5 (the snapshot line is ignored)
    assert out["spend"].to_dict() == {"a": 1.5, "b": 22.0, "c": -6.0}


def test_no_customer_left_raises_data_error() -> None:
    # Prepare: every line is on or after the snapshot
    frame = _transactions().assign(date=["2021-01-01 00:00", "2021-01-02 00:00"] * 3
                                   + ["2021-01-03 00:00"])

    # Execute / Assert
    with pytest.raises(DataError, match="no customer left"):
        aggregate_customers(frame, _aggregation())


# --- the [customers] section of the spec ------------------------------------------------------

FEATURES = {"lines": {"kind": "numeric", "bounds": [0, 100]}}


@pytest.mark.parametrize(("section", "match"), [
    ({"id": "cid", "aggregates": {"x": {"function": "median", "source": "qty"}}},
     r"\[customers.aggregates.x\]: 'function' must be one of"),
    ({"id": "cid", "aggregates": {"x": {"function": "sum"}}},
     r"\[customers.aggregates.x\]: function 'sum' needs a 'source'"),
    ({"id": "cid", "aggregates": {"x": {"function": "recency_days"}}},
     "recency_days/tenure_days need 'date' and 'snapshot'"),
    ({"id": "cid", "date": "d", "aggregates": {"x": {"function": "tenure_days"}}},
     "recency_days/tenure_days need 'date' and 'snapshot'"),
    ({"id": "cid", "date": "d", "snapshot": "someday",
      "aggregates": {"x": {"function": "count"}}}, "'snapshot' 'someday' is not a date"),
    ({"id": "cid", "aggregates": {}}, "declare at least one aggregate"),
    ({"id": "cid", "group": "x", "aggregates": {"x": {"function": "count"}}},
     r"unknown key\(s\) \['group'\]"),
    ({"id": "cid", "aggregates": {"x": "count"}}, "must be a table with 'function'"),
    ({"id": "cid", "rows": {"a": 1}, "aggregates": {"x": {"function": "count"}}},
     "must map column names to expressions"),
], ids=["unknown-function", "missing-source", "recency-without-date", "tenure-without-snapshot",
        "bad-snapshot", "no-aggregate", "unknown-key", "aggregate-not-a-table",
        "non-string-expression"])
def test_invalid_customers_section_raises_contract_error(section, match) -> None:
    with pytest.raises(ContractError, match=match) as info:
        parse_spec({"features": FEATURES, "customers": section},
                              source="partner-spec.toml")
    assert "partner-spec.toml" in str(info.value)


def test_identity_section_needs_an_email_or_phone_column() -> None:
    with pytest.raises(ContractError, match="declare an 'email' and/or a 'phone'"):
        parse_spec({"features": FEATURES, "identity": {"region": "GB"}})


def test_customers_section_round_trips_through_to_dict() -> None:
    # Prepare
    spec = parse_spec({"features": FEATURES, "customers": CUSTOMERS})

    # Execute
    again = parse_spec(spec.to_dict())

    # Assert
    assert again.customers == spec.customers
    assert again.fingerprint() == spec.fingerprint()


# --- customer_table: pseudonymise first, then aggregate ---------------------------------------

ADA = "ada.lovelace@gmail.com"


def _retail_lines() -> pd.DataFrame:
    return pd.DataFrame({
        "email": ["Ada.Lovelace@gmail.com", "  ADA.LOVELACE@GMAIL.COM ",
                  "adalovelace+shop@googlemail.com", "bob@example.co.uk", None,
                  "bob@example.co.uk", None, "b.o.b@example.co.uk"],
        "phone": ["07400 123456", None, None, None, "+44 7400 654321", None, None, None],
        "InvoiceNo": ["536365", "536366", "C536367", "536368", "536369", "536370", "536371",
                      "536372"],
        "StockCode": ["A", "B", "A", "C", "D", "C", "E", "F"],
        "Quantity": [2, 1, -1, 4, 1, 1, 1, 3],
        "UnitPrice": [3.0, 10.0, 3.0, 2.5, 5.0, 1.0, 1.0, 2.0],
        "InvoiceDate": ["2011-12-01 08:00:00", "2011-12-05 09:00:00", "2011-12-06 10:00:00",
                        "2011-11-30 12:00:00", "2011-12-09 12:00:00", "2011-12-10 09:00:00",
                        "2011-12-02 12:00:00", "2011-12-03 12:00:00"],
    })


@pytest.fixture(scope="module")
def retail_spec() -> FeatureSpec:
    return load_spec(SPEC_DIR / "retail_transactions.toml")


@pytest.fixture(scope="module")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(generate_key(key_id="k-test"))


def test_customer_table_requires_a_pseudonymizer(retail_spec) -> None:
    with pytest.raises(DataError, match="pseudonymisation key"):
        customer_table(_retail_lines(), retail_spec, pseudonymizer=None)


def test_customer_table_drops_raw_identity_columns(retail_spec, pseudonymizer) -> None:
    # Execute
    table = customer_table(_retail_lines(), retail_spec, pseudonymizer=pseudonymizer)

    # Assert
    assert "email" not in table.columns and "phone" not in table.columns
    assert table.columns[0] == "pid"
    text = table.astype(str).to_numpy().ravel()
    assert not any("@" in cell or "7400" in cell for cell in text)
    assert all(pid.startswith("k-test:") for pid in table["pid"])


def test_spellings_of_one_email_are_one_customer(retail_spec, pseudonymizer) -> None:
    # Prepare: Ada writes her gmail address three ways; bob@ and b.o.b@ (not gmail) differ;
    # one customer has only a phone; one line has no identifier at all (dropped)
    lines = _retail_lines()

    # Execute
    table = customer_table(lines, retail_spec, pseudonymizer=pseudonymizer).set_index("pid")

    # Assert
    ada = pseudonymizer.email(ADA)
    bob = pseudonymizer.email("bob@example.co.uk")
    dotted = pseudonymizer.email("b.o.b@example.co.uk")
    by_phone = pseudonymizer.phone("07400 654321")
    assert set(table.index) == {ada, bob, dotted, by_phone}
    # Ada: clean invoices 536365 (2 x 3) and 536366 (1 x 10), one cancelled line of three
    assert table.loc[ada, "frequency"] == 2
    assert table.loc[ada, "monetary"] == pytest.approx(16.0)
    assert table.loc[ada, "distinct_products"] == 2
    assert table.loc[ada, "recency_days"] == 5.0       # 2011-12-10 - 2011-12-05
    assert table.loc[ada, "tenure_days"] == 9.0        # 2011-12-10 - 2011-12-01
    assert table.loc[ada, "cancel_share"] == pytest.approx(1 / 3)
    assert table.loc[ada, "mean_basket"] == pytest.approx(8.0)
    # Bob's 2011-12-10 line is on the snapshot and ignored
    assert table.loc[bob, "frequency"] == 1
    assert table.loc[bob, "monetary"] == pytest.approx(10.0)


def test_retail_lines_without_cancellations_are_aggregated(retail_spec, pseudonymizer) -> None:
    # Prepare: read_table infers an integer InvoiceNo column when no invoice starts with "C"
    lines = _retail_lines()
    lines = lines.loc[~lines["InvoiceNo"].str.startswith("C")]
    lines = lines.assign(InvoiceNo=lines["InvoiceNo"].astype("int64"))

    # Execute
    table = customer_table(lines, retail_spec, pseudonymizer=pseudonymizer).set_index("pid")

    # Assert
    assert table.loc[pseudonymizer.email(ADA), "cancel_share"] == 0.0


def test_customer_table_without_identity_or_aggregation_returns_the_rows() -> None:
    # Prepare
    spec = parse_spec({"features": FEATURES})
    frame = pd.DataFrame({"lines": [1, 2]})

    # Execute / Assert
    pd.testing.assert_frame_equal(customer_table(frame, spec), frame)


def test_customer_table_with_identity_but_no_aggregation_keeps_one_row_per_line(
        pseudonymizer) -> None:
    # Prepare
    spec = parse_spec({"features": FEATURES, "identity": {"email": "mail"}})
    frame = pd.DataFrame({"mail": ["Ada.Lovelace@gmail.com", None, "adalovelace@gmail.com"],
                          "lines": [1, 2, 3]})

    # Execute
    table = customer_table(frame, spec, pseudonymizer=pseudonymizer)

    # Assert: the line without an identifier is dropped; the two spellings share a pid
    assert table.columns.tolist() == ["pid", "lines"]
    assert table["lines"].tolist() == [1, 3]
    assert table["pid"].nunique() == 1


# --- dates are explicit: ISO 8601 by default, else the declared date_format ---------------

DATED = {"id": "cid", "date": "date", "snapshot": "1997-01-10",
         "aggregates": {"recency": {"function": "recency_days"},
                        "tenure": {"function": "tenure_days"}}}


def _dated(dates: list[Any], **changes: Any) -> tuple[pd.DataFrame, CustomerAggregation]:
    frame = pd.DataFrame({"cid": ["a", "a", "b", "b"][:len(dates)], "date": dates})
    return frame, parse_customers({**DATED, **changes}, "t")


def test_integer_dates_without_a_format_are_a_data_error_not_epoch_nanoseconds() -> None:
    # Prepare: read as nanoseconds since 1970 these would all be 1970-01-01
    frame, spec = _dated([19970101, 19970105, 19970102, 19970108])

    # Execute / Assert
    with pytest.raises(DataError, match=r"partner\.csv: the date column 'date' holds numbers"
                                        r".*date_format = \"%Y%m%d\""):
        aggregate_customers(frame, spec, source="partner.csv")


@pytest.mark.parametrize("dates", [
    [19970101, 19970105, 19970102, 19970108],
    [19970101.0, 19970105.0, 19970102.0, 19970108.0],
    ["19970101", "19970105", "19970102", "19970108"],
], ids=["int", "float", "text"])
def test_declared_date_format_reads_integer_dates(dates) -> None:
    # Prepare
    frame, spec = _dated(dates, date_format="%Y%m%d")

    # Execute
    out = aggregate_customers(frame, spec)

    # Assert: snapshot 1997-01-10
    assert out.loc["a"].tolist() == [5.0, 9.0]
    assert out.loc["b"].tolist() == [2.0, 8.0]


def test_integer_dates_with_gaps_are_read_with_the_format() -> None:
    # Prepare: a CSV integer column with a gap is read as floats
    frame, spec = _dated([19970101.0, np.nan, 19970102.0, 19970108.0], date_format="%Y%m%d")

    # Execute
    out = aggregate_customers(frame, spec)

    # Assert: the undated row is kept out of the dates (missing, not a bad value)
    assert out.loc["b"].tolist() == [2.0, 8.0]
    assert out.loc["a"].tolist() == [9.0, 9.0]


def test_day_first_dates_with_a_declared_format() -> None:
    # Prepare
    frame, spec = _dated(["01/01/1997", "05/01/1997", "02/01/1997", "08/01/1997"],
                         date_format="%d/%m/%Y")

    # Execute
    out = aggregate_customers(frame, spec)

    # Assert
    assert out.loc["a"].tolist() == [5.0, 9.0]


def test_values_not_matching_the_declared_format_are_counted_not_shown() -> None:
    # Prepare
    frame, spec = _dated([19970101, 1997010, 19971301, 19970108], date_format="%Y%m%d")

    # Execute / Assert
    with pytest.raises(DataError, match=r"partner\.csv: 2 of 4 values of the date column "
                                        r"'date' do not match the declared date_format "
                                        r"'%Y%m%d'") as info:
        aggregate_customers(frame, spec, source="partner.csv")
    assert "1997010" not in str(info.value) and "19971301" not in str(info.value)


def test_dates_are_iso_8601_by_default() -> None:
    # Prepare: US-style dates were guessed before; now they need a declared format
    frame, spec = _dated(["1997-01-01", "01/05/1997", "1997-01-02", "01/08/1997"])

    # Execute / Assert
    with pytest.raises(DataError, match=r"2 of 4 values of the date column 'date' do not "
                                        r"match ISO 8601.*declare date_format"):
        aggregate_customers(frame, spec)


def test_date_column_with_a_single_day_is_a_data_error() -> None:
    # Prepare: a wrongly read column typically collapses to one day
    frame, spec = _dated(["1997-01-01 08:00", "1997-01-01 09:00", "1997-01-01",
                          "1997-01-01 23:00"])

    # Execute / Assert
    with pytest.raises(DataError, match=r"all 4 values of the date column 'date' fall on "
                                        "the same day"):
        aggregate_customers(frame, spec)


def test_dates_in_one_time_zone_keep_their_local_days_and_mixed_zones_are_refused() -> None:
    # Prepare
    one_zone, spec = _dated(["1997-01-01T23:30:00+01:00", "1997-01-05T08:00:00+01:00",
                             "1997-01-02T08:00:00+01:00", "1997-01-08T23:30:00+01:00"])
    mixed = one_zone.assign(date=["1997-01-01T08:00:00+01:00", "1997-01-05T08:00:00+02:00",
                                  "1997-01-02", "1997-01-08"])

    # Execute
    out = aggregate_customers(one_zone, spec)

    # Assert
    assert out.loc["a"].tolist() == [5.0, 9.0]
    assert out.loc["b"].tolist() == [2.0, 8.0]
    with pytest.raises(DataError, match="the values of the date column 'date' mix time zones"):
        aggregate_customers(mixed, spec)


def test_datetime_column_is_used_as_it_is() -> None:
    # Prepare
    frame, spec = _dated(list(pd.to_datetime(["1997-01-01", "1997-01-05", "1997-01-02",
                                              "1997-01-08"])))

    # Execute
    out = aggregate_customers(frame, spec)

    # Assert
    assert out.loc["a"].tolist() == [5.0, 9.0]


@pytest.mark.parametrize(("changes", "match"), [
    ({"date_format": "YYYYMMDD"}, r"\[customers\] date_format: must be a strptime format"),
    ({"date_format": 19970101}, r"\[customers\] date_format: must be a strptime format"),
    ({"date_format": "%Y%m%d", "date": None, "aggregates": {"n": {"function": "count"}}},
     "'date_format' needs a 'date' column"),
], ids=["no-directive", "not-text", "without-date"])
def test_invalid_date_format_is_a_contract_error(changes, match) -> None:
    section = {k: v for k, v in {**DATED, **changes}.items() if v is not None}
    with pytest.raises(ContractError, match=match):
        parse_customers(section, "t")


def test_date_format_round_trips_through_to_dict() -> None:
    # Prepare
    spec = parse_spec({"features": FEATURES,
                                  "customers": {**DATED, "date_format": "%Y%m%d"}})

    # Execute
    again = parse_spec(spec.to_dict())

    # Assert
    assert again.customers is not None and again.customers.date_format == "%Y%m%d"
    assert again.fingerprint() == spec.fingerprint()
