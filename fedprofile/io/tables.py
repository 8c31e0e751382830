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

from fedprofile.contract.suggest import one_column_problem
from fedprofile.errors import ContractError, DataError

__all__ = [
    "SEPARATORS",
    "SUPPORTED_SUFFIXES",
    "check_document",
    "iter_table",
    "json_safe",
    "read_document",
    "read_table",
    "sniff_separator",
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


SEPARATORS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
"""The CSV separators read, by name."""

_SNIFF_BYTES, _SNIFF_LINES = 64 * 1024, 200


def _head_lines(path: Path, compressed: bool) -> list[str]:
    """The file's first complete lines (at most ``_SNIFF_LINES`` within 64 KiB)."""
    opener = gzip.open if compressed else open
    with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
        head = fh.read(_SNIFF_BYTES)
    lines = head.splitlines(keepends=True)
    if len(head) == _SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    return [line for line in lines[:_SNIFF_LINES] if line.strip()]


def sniff_separator(lines: list[str]) -> str:
    """The separator among ``, ; tab |`` that best splits a CSV file's first lines.

    A candidate must split the header into two columns or more; among those, the one that
    splits the most rows into as many fields as the header wins, then the one giving more
    columns (a ``;`` file with decimal commas: ``;``), then the order ``, ; tab |``. Quoted
    fields are honoured (:mod:`csv`). A single column (no candidate) reads with ``,``.

    Parameters
    ----------
    lines : list of str
        The header line and the first data lines.

    Returns
    -------
    str
        The separator.
    """
    best, best_key = ",", None
    for rank, sep in enumerate(SEPARATORS):
        widths = [len(row) for row in csv.reader(lines, delimiter=sep) if row]
        if not widths or widths[0] < 2:
            continue
        body = widths[1:]
        agree = sum(w == widths[0] for w in body) / len(body) if body else 1.0
        key = (agree >= 0.9, widths[0], agree, -rank)
        if best_key is None or key > best_key:
            best, best_key = sep, key
    return best


def _sniff_separator(path: Path, compressed: bool) -> str:
    return sniff_separator(_head_lines(path, compressed))


def _check_columns(path: Path, columns: pd.Index) -> None:
    """Refuse a CSV that reads as one column whose name holds a separator character."""
    if len(columns) != 1:
        return
    header = str(columns[0])
    found = [name for sep, name in SEPARATORS.items() if sep in header]
    if found:
        raise DataError(f"Data file {str(path)!r} reads as one column, but its header holds "
                        f"{found[0]} characters: it looks {found[0]}-separated with lines "
                        "that do not split consistently (is each line quoted whole?). Write "
                        "it with one of the separators , ; tab or | and quote only fields.")


def _one_column_header(path: Path) -> str | None:
    """Why a CSV whose lines do not split as its header does: a header of one column."""
    try:
        lines = _head_lines(path, path.name.lower().endswith(".gz"))
    except (OSError, EOFError, zlib.error):
        return None
    header = next(csv.reader(lines[:1], delimiter=sniff_separator(lines)), [])
    return one_column_problem(header, needed=2) if lines else None


_READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError,
                pa.ArrowException)


def _table_file(path: str | Path) -> tuple[Path, str]:
    """The path of an existing table file and its (supported) suffix."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"Data file {str(p)!r} does not exist.")
    return p, _suffix(p)


def _unreadable(path: Path, exc: Exception) -> DataError:
    if isinstance(exc, UnicodeDecodeError):
        return DataError(f"Data file {str(path)!r} could not be read as UTF-8 text; save it "
                         "as UTF-8 CSV (or Parquet).")
    if isinstance(exc, pd.errors.ParserError):
        problem = _one_column_header(path)
        if problem:
            return DataError(f"Data file {str(path)!r}: {problem}")
    return DataError(f"Data file {str(path)!r} could not be read ({type(exc).__name__}); "
                     "is it a valid CSV or Parquet file?")


def read_table(path: str | Path, *, columns: list[str] | None = None,
               text_columns: Collection[str] = ()) -> pd.DataFrame:
    """Read a CSV (``,``/``;``/tab/``|`` separated, optionally gzip'd) or Parquet file.

    The CSV separator is found from the first lines (:func:`sniff_separator`).

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
        If the file is missing, of an unsupported type, unreadable, not UTF-8, empty, or a
        CSV that reads as one column whose header holds a separator.
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
    if suffix not in (".parquet", ".pq"):
        _check_columns(p, frame.columns)
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
        As :func:`read_table`.
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
            _check_columns(p, header)
            with pd.read_csv(p, sep=sep, chunksize=chunk_rows, low_memory=False,
                             usecols=_present(header, columns),
                             dtype=dict.fromkeys(text_columns, str)) as reader:
                for chunk in reader:
                    rows += len(chunk)
                    yield chunk
    except DataError:
        raise
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
