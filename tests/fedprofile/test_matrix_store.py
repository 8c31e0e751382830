"""Tests for chunked reading and the partner's float32 matrix cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec, parse_spec
from fedprofile.errors import DataError
from fedprofile.io.matrix_store import (
    STORAGE_DTYPE,
    frame_chunks,
    stored_values,
    to_storage,
    write_matrix,
)
from fedprofile.io.tables import iter_table, read_table, write_table

SPEC = parse_spec({"features": {
    "age": {"kind": "numeric", "bounds": [20, 60]},
    "balance": {"kind": "numeric", "bounds": [-100, 100], "transform": "signed_log1p",
                "missing": "impute", "default": 0},
    "color": {"kind": "categorical", "categories": ["red", "blue"]},
}}, source="test-spec.toml")


def _frame(n: int = 103, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.integers(10, 80, n).astype(object),
        "balance": rng.normal(0, 80, n),
        "color": rng.choice(["red", "blue", "green"], n).astype(object),
        "other": rng.normal(size=n),
    })
    frame.loc[::11, "age"] = "n/a"          # dropped rows (age has missing = "drop")
    frame.loc[::7, "balance"] = np.nan      # imputed
    frame.loc[::13, "color"] = None         # dropped
    return frame


# --- write_matrix ----------------------------------------------------------------------------


def test_chunked_matrix_and_report_equal_the_whole_table_transform(tmp_path) -> None:
    # Prepare
    frame = _frame()
    whole = transform_frame(frame, SPEC)

    # Execute: chunks of 10 rows (the last one partial)
    report = write_matrix(frame_chunks(frame, 10), SPEC, tmp_path / "m.npy")

    # Assert: the same rows in the same order, stored as float32; the same counts
    stored = np.load(tmp_path / "m.npy", mmap_mode="r")
    assert stored.dtype == STORAGE_DTYPE and stored.shape == whole.matrix.shape
    np.testing.assert_array_equal(stored, to_storage(whole.matrix))
    assert np.abs(stored - whole.matrix).max() < 1e-7
    assert report.to_dict() == whole.report.to_dict()
    assert 0 < report.dropped < report.rows
    assert not (tmp_path / "m.npy.rows").exists()


def test_column_with_no_number_in_one_chunk_only_is_accepted(tmp_path) -> None:
    # Prepare: the first chunk's ages are all text, the others are numbers
    frame = _frame(40)
    frame.loc[:9, "age"] = "unknown"

    # Execute
    report = write_matrix(frame_chunks(frame, 10), SPEC, tmp_path / "m.npy")

    # Assert: judged as one table, like the whole-table transform
    assert report.unparseable["age"] == transform_frame(frame, SPEC).report.unparseable["age"]


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f.assign(age="unknown"), "column 'age' .feature 'age'. holds no numeric values"),
    (lambda f: f.assign(color=None), "no customer is left after the missing-value rules"),
    (lambda f: f.iloc[:0], "the table has no rows"),
])
def test_unusable_tables_are_refused_whole_and_leave_no_file(tmp_path, change, message) -> None:
    # Prepare
    frame = change(_frame(30))

    # Execute / Assert
    with pytest.raises(DataError, match=message):
        write_matrix(frame_chunks(frame, 7), SPEC, tmp_path / "m.npy", source="p.csv")
    assert list(tmp_path.iterdir()) == []


def test_stored_values_round_toward_zero_so_no_row_outgrows_the_norm_bound() -> None:
    # Prepare: weight 0.3 puts one-hot entries at 0.3, which float32 rounds up to nearest
    spec = parse_spec({"features": {
        "age": {"kind": "numeric", "bounds": [20, 60], "weight": 0.3},
        "color": {"kind": "categorical", "categories": ["red", "blue"], "weight": 0.3},
    }}, source="w.toml")
    exact = transform_frame(pd.DataFrame({"age": [60, 20, 41.3], "color": ["red"] * 3}),
                            spec).matrix
    nearest = exact.astype(np.float32).astype(np.float64)
    assert (np.abs(nearest) > np.abs(exact)).any()  # rounding to nearest would grow values

    # Execute
    stored = stored_values(exact)

    # Assert: float32 values, never larger in magnitude, never longer than the bound
    assert stored.dtype == np.float64
    np.testing.assert_array_equal(stored, stored.astype(np.float32))
    assert (np.abs(stored) <= np.abs(exact)).all() and np.abs(stored - exact).max() < 1e-7
    assert (np.linalg.norm(stored, axis=1) <= spec.norm_bound).all()


# --- iter_table ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["t.csv", "t.csv.gz", "t.parquet"])
def test_iter_table_chunks_concatenate_to_the_whole_table(tmp_path, name) -> None:
    # Prepare
    path = write_table(_frame().astype({"age": str, "color": str}), tmp_path / name)

    # Execute
    chunks = list(iter_table(path, chunk_rows=25, columns=["age", "color", "absent"]))

    # Assert: bounded chunks, only the asked columns the file has, all rows in order
    assert [len(c) for c in chunks] == [25, 25, 25, 25, 3]
    whole = read_table(path)[["age", "color"]]
    got = pd.concat(chunks, ignore_index=True)
    assert list(got.columns) == ["age", "color"]
    pd.testing.assert_frame_equal(got.astype(str), whole.astype(str))


@pytest.mark.parametrize(("content", "message"), [
    (None, "does not exist"),
    (b"", "could not be read|has no rows"),
    (b"a,b\n", "has no rows"),
    (b"PAR1 not really parquet", "could not be read"),
])
def test_iter_table_names_the_bad_file(tmp_path, content, message) -> None:
    path = tmp_path / ("bad.parquet" if content and content.startswith(b"PAR1") else "bad.csv")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        list(iter_table(path, chunk_rows=10))
    assert str(path) in str(info.value)


# --- the partner's cache ---------------------------------------------------------------------


def _site(tmp_path: Path, data: Path, spec_path: Path) -> PartnerSite:
    site = PartnerSite(NodeConfig(data_path=str(data), spec=str(spec_path), partner_name="p",
                                  state_dir=str(tmp_path / "state")))
    site.chunk_rows = 9
    return site


def test_partner_streams_its_file_into_a_mapped_float32_cache(tmp_path) -> None:
    # Prepare: the bank contract over a slice of the shipped data, as CSV
    from fedprofile.presets.datasets import load_preset

    bank = load_preset("bank")
    frame = bank.frame.iloc[:200]
    data = write_table(frame, tmp_path / "customers.csv")
    spec = load_spec(bank.spec_path)

    # Execute
    matrix = _site(tmp_path, data, bank.spec_path).matrix()

    # Assert: the whole-table transform's values, read from a memory map
    assert isinstance(matrix, np.memmap) and matrix.dtype == STORAGE_DTYPE
    np.testing.assert_array_equal(np.asarray(matrix, dtype=np.float64),
                                  stored_values(transform_frame(frame, spec).matrix))
    quality = (tmp_path / "state" / "data_quality.json").read_text()
    assert '"rows": 200' in quality


def test_partner_cache_is_reused_and_rebuilt_when_the_data_change(tmp_path) -> None:
    # Prepare
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text('[features.age]\nkind = "numeric"\nbounds = [20, 60]\n')
    data = write_table(pd.DataFrame({"age": [30, 40, 50]}), tmp_path / "d.parquet")
    first = _site(tmp_path, data, spec_path).matrix()
    cache = next((tmp_path / "state" / "cache").glob("matrix-*.npy"))
    built = cache.stat().st_mtime_ns

    # Execute: a second site on the same file, then a changed file
    again = _site(tmp_path, data, spec_path).matrix()
    reused = cache.stat().st_mtime_ns == built
    write_table(pd.DataFrame({"age": [20, 60, 60, 60]}), data)
    changed = _site(tmp_path, data, spec_path).matrix()

    # Assert
    assert Path(again.filename) == Path(first.filename) == cache and reused
    np.testing.assert_array_equal(changed[:, 0], [-0.5, 0.5, 0.5, 0.5])
    assert not cache.exists()
    assert len(list((tmp_path / "state" / "cache").glob("matrix-*.npy"))) == 1


@pytest.mark.parametrize(("categories", "column"), [
    (["1", "2"], ["1", "2"] * 5 + ["1", "", "2", "1", "2", "2", "1", "2", "1", "1"]),
    (["007", "008", "new"], ["007", "008"] * 5 + ["new", "007"] * 5),
], ids=["codes-with-a-blank", "leading-zeros-then-text"])
def test_csv_chunks_read_categories_as_the_whole_file_does(tmp_path, categories, column) -> None:
    # Prepare: the chunk boundary (10 rows) would change the column's inferred type
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f'[features.code]\nkind = "categorical"\ncategories = {categories}\n'
                         'missing = "impute"\ndefault = "(other)"\nother = true\n')
    data = tmp_path / "d.csv"
    data.write_text("n,code\n" + "".join(f"{i},{c}\n" for i, c in enumerate(column)))
    site = _site(tmp_path, data, spec_path)
    site.chunk_rows = 10

    # Execute
    chunked = np.asarray(site.matrix())

    # Assert: every value found its category, as written in the file
    expected = pd.Series([c or "(other)" for c in column])
    levels = [*categories, "(other)"]
    np.testing.assert_array_equal(chunked.argmax(axis=1), expected.map(levels.index))
    quality = (tmp_path / "state" / "data_quality.json").read_text()
    assert '"other_category": {\n  "code": 0' in quality


def test_csv_with_none_of_the_contract_columns_names_them(tmp_path) -> None:
    data = tmp_path / "d.csv"
    data.write_text("alter;kontostand\n30;10\n")
    bank_like = tmp_path / "spec.toml"
    bank_like.write_text('[features.age]\nkind = "numeric"\nbounds = [20, 60]\n')
    with pytest.raises(DataError, match=r"missing column\(s\) \['age'\].*column mapping"):
        _site(tmp_path, data, bank_like).matrix()


def test_identity_file_that_already_has_an_id_column_is_refused_before_any_release(
        tmp_path) -> None:
    from fedprofile.privacy.keys import generate_key, write_key

    spec_path = tmp_path / "spec.toml"
    spec_path.write_text('[identity]\nemail = "email"\n\n'
                         '[features.age]\nkind = "numeric"\nbounds = [20, 60]\n')
    data = write_table(pd.DataFrame({"email": ["a@example.com"], "pid": ["x"], "age": [30]}),
                       tmp_path / "d.csv")
    key = write_key(generate_key(), tmp_path / "k.key")
    site = PartnerSite(NodeConfig(data_path=str(data), spec=str(spec_path), partner_name="p",
                                  state_dir=str(tmp_path / "state"), key=str(key)))
    with pytest.raises(DataError, match="pid"):
        site.matrix()
