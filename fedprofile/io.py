"""Reading partner tables (CSV, gzip'd CSV, Parquet) with errors that name the file."""

from __future__ import annotations

import csv
import gzip
import json
import math
import zlib
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedprofile.errors import ContractError, DataError

__all__ = [
    "SUPPORTED_SUFFIXES",
    "check_document",
    "iter_table",
    "json_safe",
    "read_document",
    "read_table",
    "write_document",
    "write_table",
]

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise DataError(f"File {str(path)!r} has an unsupported type; use one of "
                    f"{', '.join(SUPPORTED_SUFFIXES)}.")


def _sniff_separator(path: Path, compressed: bool) -> str:
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # type: ignore[operator]
        head = fh.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(head.splitlines()[0] if head else "", ",;\t|").delimiter
    except csv.Error:
        return ","


_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError,
                pa.ArrowException)


def _table_file(path: str | Path) -> tuple[Path, str]:
    """The path of an existing table file and its (supported) suffix."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Data file {str(p)!r} does not exist.")
    return p, _suffix(p)


def _unreadable(path: Path, exc: Exception) -> DataError:
    return DataError(f"Data file {str(path)!r} could not be read ({type(exc).__name__}); "
                     "is it a valid CSV or Parquet file?")


def read_table(path: str | Path, *, columns: list[str] | None = None,
               text_columns: Collection[str] = ()) -> pd.DataFrame:
    """Read a CSV (``,``/``;``/tab separated, optionally gzip'd) or Parquet file.

    Parameters
    ----------
    path : str or Path
        The file to read.
    columns : list of str, optional
        Only these columns (Parquet reads no others; CSV reads all, then selects).
    text_columns : collection of str
        CSV columns read as text, as written (codes such as ``007`` keep their zeros).

    Raises
    ------
    DataError
        If the file is missing, of an unsupported type, unreadable or empty.
    """
    p, suffix = _table_file(path)
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(p, columns=columns)
        else:
            sep = _sniff_separator(p, suffix == ".csv.gz")
            frame = pd.read_csv(p, sep=sep, low_memory=False,
                                dtype=dict.fromkeys(text_columns, str))
    except _READ_ERRORS as exc:
        raise _unreadable(p, exc) from None
    if frame.empty:
        raise DataError(f"Data file {str(p)!r} has no rows.")
    if columns is not None and suffix not in (".parquet", ".pq"):
        absent = [c for c in columns if c not in frame.columns]
        if absent:
            raise DataError(f"Data file {str(p)!r} has no column(s) {absent}.")
        frame = frame[columns]
    return frame


def iter_table(path: str | Path, *, chunk_rows: int, columns: Collection[str] | None = None,
               text_columns: Collection[str] = ()) -> Iterator[pd.DataFrame]:
    """Read a table like :func:`read_table`, ``chunk_rows`` rows at a time.

    ``columns`` limits what is read to those of the named columns the file has (absent
    ones are left for the caller to report; a file with none of them is read whole, so the
    caller can name what is missing). ``text_columns`` are CSV columns read as text, so
    their values do not depend on which rows share a chunk. Memory is bounded by one chunk
    for CSV, and by one row group for Parquet.

    Raises
    ------
    DataError
        If the file is missing, of an unsupported type, unreadable or empty.
    """
    p, suffix = _table_file(path)
    rows = 0
    try:
        if suffix in (".parquet", ".pq"):
            with pq.ParquetFile(p) as parquet:
                chosen = _present(parquet.schema_arrow.names, columns)
                for batch in parquet.iter_batches(batch_size=chunk_rows, columns=chosen):
                    rows += batch.num_rows
                    yield batch.to_pandas()
        else:
            sep = _sniff_separator(p, suffix == ".csv.gz")
            header = pd.read_csv(p, sep=sep, nrows=0).columns
            with pd.read_csv(p, sep=sep, chunksize=chunk_rows, low_memory=False,
                             usecols=_present(header, columns),
                             dtype=dict.fromkeys(text_columns, str)) as reader:
                for chunk in reader:
                    rows += len(chunk)
                    yield chunk
    except _READ_ERRORS as exc:
        raise _unreadable(p, exc) from None
    if rows == 0:
        raise DataError(f"Data file {str(p)!r} has no rows.")


def _present(names: Collection[str], wanted: Collection[str] | None) -> list[str]:
    """The wanted columns a file has, in file order; all of them if it has none."""
    chosen = [c for c in names if wanted is None or c in wanted]
    return chosen or list(names)


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write ``frame`` as CSV or Parquet according to the suffix of ``path``."""
    p = Path(path)
    suffix = _suffix(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".parquet", ".pq"):
        frame.to_parquet(p, index=False)
    else:
        frame.to_csv(p, index=False)
    return p


def json_safe(value: Any) -> Any:
    """Replace non-finite floats (epsilon = inf) by strings, for strict JSON documents."""
    if isinstance(value, float) and not math.isfinite(value):
        return "inf" if value > 0 else ("-inf" if value < 0 else "nan")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def write_document(doc: dict[str, Any], path: str | Path) -> Path:
    """Write a JSON document (a model file); non-finite numbers become strings."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(json_safe(doc), indent=1), encoding="utf-8")
    return p


def read_document(path: str | Path) -> dict[str, Any]:
    """Read a JSON document (a model file), with errors that name the file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"Model file {str(p)!r} does not exist.") from None
    except (OSError, ValueError) as exc:
        raise ContractError(f"Model file {str(p)!r} is not valid JSON ({exc}).") from None
    if not isinstance(doc, dict):
        raise ContractError(f"Model file {str(p)!r} does not hold a JSON object.")
    return doc


def check_document(doc: dict[str, Any], *, fmt: str, version: int, source: str) -> None:
    """Check a model document's declared format and version."""
    if doc.get("format") != fmt:
        raise ContractError(f"{source} is not a {fmt} document.")
    if doc.get("version") != version:
        raise ContractError(f"{source} has version {doc.get('version')!r}; this fedprofile "
                            f"reads version {version}.")
