"""`fedprofile pseudonymize` reads a database query or a Parquet folder as it reads a file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fedprofile.cli.commands import app
from fedprofile.errors import DataError
from fedprofile.io.sql import PASSWORD_ENV
from fedprofile.io.tables import write_table
from fedprofile.privacy.keys import generate_key, load_key
from fedprofile.privacy.pseudonym import Pseudonymizer
from fedprofile.privacy.pseudonym_files import pseudonymize_chunks

RAW = pd.DataFrame({
    "row_no": [0, 1, 2, 3, 4],
    "email": ["Ada@Example.com", "bad", None, "b.o.b+x@gmail.com", "eve@example.org"],
    "phone": [447400123456, 447700900123, 447911123456, None, 12],
    "spend": [3.5, 4.0, 0.0, 12.25, 7.0],
})
"""Raw identities; the database stores the phone numbers as integers (E.164 digits)."""


def _csv_text(frame: pd.DataFrame) -> pd.DataFrame:
    """The same rows as a partner's CSV export: the phone as it is written, '+' first."""
    return frame.assign(phone=["+" + str(int(p)) if pd.notna(p) else None
                               for p in frame["phone"]])


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "federation.key"
    assert CliRunner().invoke(app, ["keygen", "--out", str(path)]).exit_code == 0
    return path


def _pseudonymize(source: str, key: Path, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [
        "pseudonymize", source, "--key", str(key), "--out", str(out), "--email-col", "email",
        "--phone-col", "phone", "--chunk-rows", "2", *extra])
    return result.exit_code, result.output


def _sqlite(tmp_path: Path, frame: pd.DataFrame) -> str:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    frame.to_sql("customers", engine, index=False)
    engine.dispose()
    return url


def test_database_query_gives_the_pseudonyms_of_the_same_rows_read_from_csv(
        tmp_path, key) -> None:
    # Prepare: the rows in SQLite (phones as integers) and as a CSV export
    url = _sqlite(tmp_path, RAW.assign(phone=RAW["phone"].astype("Int64")))
    csv = write_table(_csv_text(RAW), tmp_path / "raw.csv")

    # Execute
    code_db, output = _pseudonymize(url, key, tmp_path / "db.csv", "--data-query",
                                    "SELECT row_no, email, '+' || phone AS phone, spend "
                                    "FROM customers ORDER BY row_no")
    code_csv, _ = _pseudonymize(str(csv), key, tmp_path / "csv.csv")

    # Assert: the same pseudonyms, no raw identity, the report counted every row
    assert code_db == 0 and code_csv == 0, output
    ours, theirs = pd.read_csv(tmp_path / "db.csv"), pd.read_csv(tmp_path / "csv.csv")
    pd.testing.assert_frame_equal(ours, theirs)
    assert ours["pid"].notna().sum() == 4 and list(ours.columns) == ["pid", "row_no", "spend"]
    text = (tmp_path / "db.csv").read_text()
    assert "Ada" not in text and "7400123456" not in text
    assert "crm.db" in output and "rows" in output


def test_a_phone_stored_as_a_number_is_read_as_its_digits(tmp_path, key) -> None:
    # Prepare: phones as integers with a NULL (pandas reads them as floats), and a CSV of
    # the digits as text
    url = _sqlite(tmp_path, RAW.assign(phone=RAW["phone"].astype("Int64")))
    digits = RAW.assign(phone=[str(int(p)) if pd.notna(p) else None for p in RAW["phone"]])
    csv = write_table(digits, tmp_path / "raw.csv")

    # Execute
    code, output = _pseudonymize(url, key, tmp_path / "db.parquet", "--data-query",
                                 "customers")
    code_csv, _ = _pseudonymize(str(csv), key, tmp_path / "csv.parquet")

    # Assert: 447911123456.0 was read as '447911123456': the phone-only row has a pseudonym,
    # the same as from the CSV, and the other columns keep their database types
    assert code == 0 and code_csv == 0, output
    ours = pd.read_parquet(tmp_path / "db.parquet")
    theirs = pd.read_parquet(tmp_path / "csv.parquet")
    assert ours["pid"].tolist() == theirs["pid"].tolist()
    assert ours["pid"][2] is not None and ours["pid"][2].startswith(
        Pseudonymizer(load_key(key)).key_id)
    assert ours["spend"].dtype == "float64" and ours["row_no"].tolist() == [0, 1, 2, 3, 4]


def test_parquet_folder_gives_the_pseudonyms_of_the_csv(tmp_path, key) -> None:
    # Prepare: the CSV export split over a partitioned folder
    raw = _csv_text(RAW)
    for part in (0, 1):
        write_table(raw[raw.row_no % 2 == part],
                    tmp_path / "ds" / f"half={part}" / "part-0.parquet")
    csv = write_table(raw.sort_values("row_no"), tmp_path / "raw.csv")

    # Execute
    code_dir, output = _pseudonymize(str(tmp_path / "ds"), key, tmp_path / "dir.parquet")
    code_csv, _ = _pseudonymize(str(csv), key, tmp_path / "csv.parquet")

    # Assert: the same pseudonym for each row; the partition column is kept
    assert code_dir == 0 and code_csv == 0, output
    ours = pd.read_parquet(tmp_path / "dir.parquet").sort_values("row_no")
    theirs = pd.read_parquet(tmp_path / "csv.parquet")
    theirs = theirs.assign(row_no=theirs.row_no.astype(int)).sort_values("row_no")
    assert ours["pid"].tolist() == theirs["pid"].tolist()
    assert sorted(ours["half"].unique()) == [0, 1]


def test_postgresql_source_keeps_the_password_out_of_output_and_files(
        postgres, tmp_path, key, monkeypatch) -> None:
    # Prepare
    engine = sa.create_engine(postgres.admin_url())
    _csv_text(RAW).to_sql("raw_ids", engine, index=False, if_exists="replace")
    engine.dispose()
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)

    # Execute
    code, output = _pseudonymize(postgres.url(), key, tmp_path / "out.csv", "--data-query",
                                 "SELECT * FROM raw_ids ORDER BY row_no")

    # Assert: read, pseudonymised, and the password nowhere
    assert code == 0, output
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 5 and out["pid"].notna().sum() == 4
    assert postgres.password not in output
    assert postgres.password not in (tmp_path / "out.csv").read_text()


@pytest.mark.parametrize(("query", "message"), [
    ("DELETE FROM customers", "SELECT/WITH"),
    ("SELECT row_no, spend FROM customers", "column 'email' (email_col) not found"),
    ("SELECT * FROM customers WHERE spend > 100", "returned no rows"),
    ("SELECT * FROM nowhere", "query failed"),
])
def test_bad_database_input_is_one_line_and_writes_nothing(tmp_path, key, query,
                                                           message) -> None:
    # Prepare
    url = _sqlite(tmp_path, RAW)

    # Execute
    result = CliRunner().invoke(app, [
        "pseudonymize", url, "--key", str(key), "--out", str(tmp_path / "out.csv"),
        "--email-col", "email", "--data-query", query])

    # Assert: exit 2, one line naming the problem, no output file, the table unchanged
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.glob("*out.csv*"))
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM customers")).scalar_one() == 5
    engine.dispose()


def test_a_column_whose_type_changes_between_chunks_is_named(tmp_path) -> None:
    # Prepare: a number column that holds text in a later chunk
    pseudo = Pseudonymizer(generate_key(key_id="k1"))
    chunks = [pd.DataFrame({"email": ["a@example.com"], "n": [1]}),
              pd.DataFrame({"email": ["b@example.com"], "n": ["x"]})]

    # Execute / Assert
    with pytest.raises(DataError, match=r"crm: column\(s\) \['n'\] change type"):
        pseudonymize_chunks(iter(chunks), tmp_path / "out.parquet", pseudo, source="crm",
                            email_col="email")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("layout", ["file", "folder"])
def test_a_phone_stored_as_a_number_in_parquet_is_read_as_its_digits(tmp_path, key,
                                                                      layout) -> None:
    # Prepare: phones as integers (a float column, with its null) in Parquet, and the same
    # digits as text in a CSV
    digits = RAW.assign(phone=[str(int(p)) if pd.notna(p) else None for p in RAW["phone"]])
    csv = write_table(digits, tmp_path / "raw.csv")
    parquet = (tmp_path / "raw.parquet" if layout == "file"
               else tmp_path / "ds" / "part=0" / "part-0.parquet")
    write_table(RAW, parquet)
    source = parquet if layout == "file" else tmp_path / "ds"

    # Execute
    code, output = _pseudonymize(str(source), key, tmp_path / "pq.parquet")
    code_csv, _ = _pseudonymize(str(csv), key, tmp_path / "csv.parquet")

    # Assert: the same pseudonyms as from the CSV, and the phone-only row has one
    assert code == 0 and code_csv == 0, output
    ours = pd.read_parquet(tmp_path / "pq.parquet")
    theirs = pd.read_parquet(tmp_path / "csv.parquet")
    assert ours["pid"].tolist() == theirs["pid"].tolist()
    assert ours["pid"][2] is not None
