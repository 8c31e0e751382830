"""Tests for turning a partner's table into the scaled matrix, and for reading tables."""

from __future__ import annotations

import copy
import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedprofile.contract.features import resolve_columns, transform_frame
from fedprofile.contract.parser import parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import DataError
from fedprofile.io.tables import read_table, write_table

L101 = math.log(101.0)  # signed_log1p of the balance bound 100

SPEC: dict[str, Any] = {
    "features": {
        "age": {"kind": "numeric", "bounds": [20, 60]},
        "balance": {"kind": "numeric", "bounds": [-100, 100], "transform": "signed_log1p",
                    "missing": "impute", "default": 0},
        "color": {"kind": "categorical", "categories": ["red", "blue"]},
    },
}


def _spec(**overrides: dict[str, Any]) -> FeatureSpec:
    data = copy.deepcopy(SPEC)
    for name, changes in overrides.items():
        data["features"][name].update(changes)
    return parse_spec(data, source="test-spec.toml")


def _frame() -> pd.DataFrame:
    return pd.DataFrame({
        "age": [30, 10, "abc", 70],            # in range, clipped low, unparseable, clipped high
        "balance": [10, None, -1000, "x"],     # value, missing, clipped, unparseable
        "color": ["red", "green", None, " blue "],  # declared, other, missing, padded
    })


# --- transform_frame by hand -----------------------------------------------------------------


def test_four_row_frame_is_transformed_by_hand() -> None:
    # Prepare
    spec = _spec()

    # Execute
    result = transform_frame(_frame(), spec, source="partner.csv")

    # Assert: age -> (clip(x) - 20) / 40 - 0.5; balance -> sign(t) log1p|t| / (2 ln 101);
    # color -> one-hot over (red, blue, other). Row 2 is dropped (age unparseable, color missing).
    expected = np.array([
        [-0.25, math.log(11.0) / (2 * L101), 1.0, 0.0, 0.0],
        [-0.50, 0.0, 0.0, 0.0, 1.0],
        [0.50, 0.0, 0.0, 1.0, 0.0],
    ])
    np.testing.assert_allclose(result.matrix, expected, rtol=0, atol=1e-15)
    assert result.keep.tolist() == [True, True, False, True]


def test_four_row_frame_report_counts_by_hand() -> None:
    # Prepare
    spec = _spec()

    # Execute
    report = transform_frame(_frame(), spec).report

    # Assert
    assert report.to_dict() == {
        "rows": 4, "customers": 3, "dropped": 1,
        "missing": {"age": 0, "balance": 1, "color": 1},
        "imputed": {"balance": 2},
        "unparseable": {"age": 1, "balance": 1},
        "clipped": {"age": 2, "balance": 1},
        "other_category": {"color": 1},
        "dropped_by": {"age": 1, "balance": 0, "color": 1},
        "other_suggestions": {},
    }


@pytest.mark.parametrize(("rule", "keep", "balance_column", "imputed"), [
    ("drop", [True, False, True, False], [0.0, 0.5], None),
    ("impute", [True, True, True, True], [0.0, 0.0, 0.5, 0.0], 2),
], ids=["drop", "impute"])
def test_missing_values_are_dropped_or_imputed_as_declared(
        rule: str, keep: list[bool], balance_column: list[float], imputed: int | None) -> None:
    # Prepare: balance default 0 -> scaled 0; 100 -> scaled 0.5
    spec = _spec(balance={"missing": rule})
    frame = pd.DataFrame({"age": [30, 30, 30, 30], "balance": [0, None, 100, "n/a"],
                          "color": ["red", "red", "red", "red"]})

    # Execute
    result = transform_frame(frame, spec)

    # Assert
    assert result.keep.tolist() == keep
    np.testing.assert_allclose(result.matrix[:, 1], balance_column, atol=1e-15)
    assert result.report.missing["balance"] == 1
    assert result.report.unparseable["balance"] == 1
    assert result.report.imputed.get("balance") == imputed
    assert result.report.dropped == keep.count(False)


def test_imputed_categorical_uses_the_declared_default_level() -> None:
    # Prepare
    spec = _spec(color={"missing": "impute", "default": "blue", "other": False})
    frame = pd.DataFrame({"age": [30, 30, 30], "balance": [0, 0, 0],
                          "color": [None, "green", "red"]})

    # Execute
    result = transform_frame(frame, spec)

    # Assert: no other slot: missing and undeclared values both become "blue"
    np.testing.assert_array_equal(result.matrix[:, 2:], [[0, 1], [0, 1], [1, 0]])
    assert result.report.imputed["color"] == 2
    assert result.report.other_category["color"] == 1


def test_undeclared_category_without_other_slot_is_dropped() -> None:
    # Prepare
    spec = _spec(color={"other": False})
    frame = pd.DataFrame({"age": [30, 30], "balance": [0, 0], "color": ["green", "red"]})

    # Execute
    result = transform_frame(frame, spec)

    # Assert
    assert result.keep.tolist() == [False, True]
    np.testing.assert_array_equal(result.matrix, [[-0.25, 0.0, 1.0, 0.0]])


def test_numeric_strings_parse_and_infinities_count_as_unparseable() -> None:
    # Prepare
    spec = _spec()
    frame = pd.DataFrame({"age": ["40", " 20 ", np.inf, "1e1"], "balance": [0, 0, 0, 0],
                          "color": ["red"] * 4})

    # Execute
    result = transform_frame(frame, spec)

    # Assert
    assert result.keep.tolist() == [True, True, False, True]
    np.testing.assert_allclose(result.matrix[:, 0], [0.0, -0.5, -0.5])
    assert result.report.unparseable["age"] == 1
    assert result.report.clipped["age"] == 1


def test_boolean_numeric_column_is_read_as_zero_and_one() -> None:
    # Prepare
    spec = parse_spec({"features": {"flag": {"kind": "numeric", "bounds": [0, 1]}}})
    frame = pd.DataFrame({"flag": [True, False]})

    # Execute
    result = transform_frame(frame, spec)

    # Assert
    np.testing.assert_array_equal(result.matrix[:, 0], [0.5, -0.5])


def test_column_mapping_reads_features_from_differently_named_columns() -> None:
    # Prepare
    spec = _spec()
    frame = _frame().rename(columns={"age": "AGE_YEARS"})

    # Execute
    result = transform_frame(frame, spec, mapping={"age": "AGE_YEARS"})

    # Assert
    assert resolve_columns(spec, {"age": "AGE_YEARS"}) == {
        "age": "AGE_YEARS", "balance": "balance", "color": "color"}
    assert result.matrix.shape == (3, 5)


def test_mapping_of_an_unknown_feature_raises_data_error_naming_it() -> None:
    # Execute / Assert
    with pytest.raises(DataError, match=r"unknown feature\(s\) \['height'\]"):
        transform_frame(_frame(), _spec(), mapping={"height": "h"})


# --- transform_frame errors ------------------------------------------------------------------


def test_missing_column_raises_data_error_naming_the_column_and_the_source() -> None:
    # Prepare
    frame = _frame().drop(columns=["balance"])

    # Execute / Assert
    with pytest.raises(DataError) as info:
        transform_frame(frame, _spec(), source="data/partner-a.csv")
    message = str(info.value)
    assert "data/partner-a.csv" in message
    assert "['balance']" in message
    assert "test-spec.toml" in message


def test_numeric_column_with_only_text_raises_data_error() -> None:
    # Prepare
    frame = _frame().assign(age=["young", "old", "n/a", "?"])

    # Execute / Assert
    with pytest.raises(DataError, match=r"partner\.csv: column 'age' \(feature 'age'\) holds "
                                        r"no numeric values"):
        transform_frame(frame, _spec(), source="partner.csv")


def test_text_column_with_some_empty_cells_still_raises_data_error() -> None:
    # Prepare
    frame = _frame().assign(balance=["rich", None, "poor", "n/a"])

    # Execute / Assert
    with pytest.raises(DataError, match="holds no numeric values"):
        transform_frame(frame, _spec(), source="partner.csv")


def test_empty_table_raises_data_error() -> None:
    # Prepare
    frame = pd.DataFrame(columns=["age", "balance", "color"])

    # Execute / Assert
    with pytest.raises(DataError, match=r"part-3\.csv: the table has no rows"):
        transform_frame(frame, _spec(), source="part-3.csv")


def test_all_rows_dropped_raises_data_error() -> None:
    # Prepare
    frame = pd.DataFrame({"age": [None, None], "balance": [0, 0], "color": ["red", "blue"]})

    # Execute / Assert
    with pytest.raises(DataError, match="no customer is left after the missing-value rules"):
        transform_frame(frame, _spec(), source="p.csv")


# --- read_table ------------------------------------------------------------------------------

_TABLE = pd.DataFrame({"age": [31, 45], "color": ["red", "blue"], "balance": [1.5, -2.0]})


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
def test_read_table_sniffs_the_csv_separator(tmp_path: Path, sep: str) -> None:
    # Prepare
    path = tmp_path / "partner.csv"
    path.write_text(sep.join(_TABLE.columns) + "\n"
                    + "\n".join(sep.join(str(v) for v in row) for row in _TABLE.values.tolist())
                    + "\n", encoding="utf-8")

    # Execute
    frame = read_table(path)

    # Assert
    pd.testing.assert_frame_equal(frame, _TABLE)


def test_read_table_reads_gzip_csv(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "partner.csv.gz"
    path.write_bytes(gzip.compress(b"age;color;balance\n31;red;1.5\n45;blue;-2.0\n"))

    # Execute
    frame = read_table(path)

    # Assert
    pd.testing.assert_frame_equal(frame, _TABLE)


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_read_table_reads_parquet_and_selects_columns(tmp_path: Path, suffix: str) -> None:
    # Prepare
    path = write_table(_TABLE, tmp_path / f"partner{suffix}")

    # Execute
    whole = read_table(path)
    some = read_table(path, columns=["balance", "age"])

    # Assert
    pd.testing.assert_frame_equal(whole, _TABLE)
    assert list(some.columns) == ["balance", "age"]


def test_read_table_selects_csv_columns_and_names_absent_ones(tmp_path: Path) -> None:
    # Prepare
    path = write_table(_TABLE, tmp_path / "partner.csv")

    # Execute
    some = read_table(path, columns=["color"])

    # Assert
    assert some["color"].tolist() == ["red", "blue"]
    with pytest.raises(DataError, match=r"partner\.csv.*has no column\(s\) \['height'\]"):
        read_table(path, columns=["height"])


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("absent.csv", None, "does not exist"),
    ("partner.xlsx", b"PK\x03\x04", "unsupported type"),
    ("partner.json", b"{}", "unsupported type"),
    ("partner.parquet", b"definitely not parquet", "could not be read"),
    ("partner.pq", b"PAR1\x00\x00PAR1", "could not be read"),
    ("partner.csv.gz", b"plain text, not gzip", "could not be read"),
    ("partner.csv", bytes(range(256)) * 8, "could not be read"),
    ("partner.csv", b"", "could not be read"),
    ("partner.csv", b"age,color\n", "has no rows"),
], ids=["missing", "xlsx", "json", "corrupt-parquet", "truncated-parquet", "not-gzip",
        "binary-csv", "empty-csv", "header-only"])
def test_read_table_errors_raise_data_error_naming_the_file(tmp_path: Path, name: str,
                                                            content: bytes | None,
                                                            problem: str) -> None:
    # Prepare
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)

    # Execute / Assert
    with pytest.raises(DataError, match=problem) as info:
        read_table(path)
    assert name in str(info.value)


def test_truncated_gzip_csv_raises_data_error_naming_the_file(tmp_path: Path) -> None:
    # Prepare
    blob = gzip.compress(b"age,color\n" + b"31,red\n" * 20_000)
    path = tmp_path / "partner.csv.gz"
    path.write_bytes(blob[: len(blob) // 2])

    # Execute / Assert
    with pytest.raises(DataError, match=r"partner\.csv\.gz"):
        read_table(path)


def test_read_table_then_transform_frame_end_to_end(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "partner.csv"
    path.write_text("age;balance;color\n30;10;red\n70;;blue\n", encoding="utf-8")

    # Execute
    result = transform_frame(read_table(path), _spec(), source=str(path))

    # Assert
    np.testing.assert_allclose(result.matrix, [
        [-0.25, math.log(11.0) / (2 * L101), 1.0, 0.0, 0.0],
        [0.5, 0.0, 0.0, 1.0, 0.0],
    ], atol=1e-15)
    assert result.report.imputed["balance"] == 1
