"""Tests of CSV separator detection in fedprofile.io.tables (read_table and iter_table)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from fedprofile.errors import DataError
from fedprofile.io.tables import iter_table, read_table, sniff_separator

ROWS = [["c1", "12,50", "3", "admin."], ["c2", "3,10", "4", "blue, collar"],
        ["c3", "0,99", "5", "retired"]]


def _write(path: Path, sep: str, header: list[str], *, compress: bool = False) -> Path:
    lines = [sep.join(header)] + [sep.join(f'"{v}"' if sep in v else v for v in row)
                                  for row in ROWS]
    text = "\n".join(lines) + "\n"
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("sep", [",", ";", "\t", "|"], ids=["comma", "semicolon", "tab", "pipe"])
@pytest.mark.parametrize("compress", [False, True], ids=["csv", "csv.gz"])
def test_each_separator_reads_its_columns(tmp_path: Path, sep: str, compress: bool) -> None:
    """A .csv written with , ; tab or | reads into its four columns, whole and in chunks."""
    name = "lines.csv.gz" if compress else "lines.csv"
    path = _write(tmp_path / name, sep, ["id", "amount", "tenure", "job"], compress=compress)
    frame = read_table(path)
    assert list(frame.columns) == ["id", "amount", "tenure", "job"]
    assert frame["job"].tolist() == ["admin.", "blue, collar", "retired"]
    chunks = list(iter_table(path, chunk_rows=2, columns=["id", "tenure"]))
    assert [len(c) for c in chunks] == [2, 1]
    assert list(chunks[0].columns) == ["id", "tenure"]


def test_semicolon_file_with_a_comma_in_a_header_name(tmp_path: Path) -> None:
    """A ';' file with decimal commas and 'Amount, EUR' in its header is still ';'."""
    path = _write(tmp_path / "eu.csv", ";", ["id", "Amount, EUR", "tenure", "job"])
    frame = read_table(path)
    assert list(frame.columns) == ["id", "Amount, EUR", "tenure", "job"]
    assert frame["tenure"].tolist() == [3, 4, 5]
    chunks = list(iter_table(path, chunk_rows=10, columns=["tenure"]))
    assert chunks[0]["tenure"].tolist() == [3, 4, 5]


def test_lines_quoted_whole_are_refused_naming_the_separator(tmp_path: Path) -> None:
    """A file that reads as one column whose header holds ';' says it looks ;-separated."""
    path = tmp_path / "quoted.csv"
    path.write_text('"id;tenure;job"\n"c1;3;admin."\n"c2;4;retired"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"one column.*semicolon"):
        read_table(path)
    with pytest.raises(DataError, match=r"one column.*semicolon"):
        list(iter_table(path, chunk_rows=10))


def test_single_column_file_reads(tmp_path: Path) -> None:
    """A genuine one-column file (no separator in its header) reads as one column."""
    path = tmp_path / "one.csv"
    path.write_text("customer id\nc1\nc2\n", encoding="utf-8")
    assert list(read_table(path).columns) == ["customer id"]


def test_non_utf8_file_says_so(tmp_path: Path) -> None:
    """A cp1252 file is refused with a message naming the encoding problem."""
    path = tmp_path / "latin.csv"
    path.write_bytes("id;city\nc1;Köln\n".encode("latin-1"))
    with pytest.raises(DataError, match="could not be read as UTF-8"):
        read_table(path)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (["a,b,c\n", "1,2,3\n"], ","),
        (["a;b;c\n", "1;2,5;3\n"], ";"),
        (["a\tb\n", "x, y\t2\n"], "\t"),
        (["a|b\n", "Smith, J|2\n"], "|"),
        (["id,\"x;y\",z\n", "1,2,3\n"], ","),
        (["single\n", "1\n"], ","),
        ([], ","),
    ],
)
def test_sniff_separator(lines: list[str], expected: str) -> None:
    assert sniff_separator(lines) == expected


def test_read_table_of_a_dataframe_round_trip(tmp_path: Path) -> None:
    """A tab file written by pandas reads back equal."""
    frame = pd.DataFrame({"id": ["a", "b"], "x": [1.5, 2.5]})
    path = tmp_path / "t.csv"
    frame.to_csv(path, sep="\t", index=False)
    pd.testing.assert_frame_equal(read_table(path), frame)
