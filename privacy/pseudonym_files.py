"""Pseudonymise whole tables: CSV/Parquet files, or chunks read from a data source.

Rows stream through in chunks; the output is written to a staging file and moved into place
only when complete, so a failure leaves no partial table.
"""

from __future__ import annotations

import gzip
import itertools
import os
import secrets
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedprofile.errors import ContractError, DataError
from fedprofile.privacy.pseudonym import (
    Pseudonymizer,
    PseudonymizeReport,
    check_identity_columns,
    pseudonymize_frame,
)

__all__ = ["pseudonymize_chunks", "pseudonymize_file"]

_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, pa.ArrowException)

def _file_kind(path: Path, role: str) -> tuple[str, bool]:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        return "csv", name.endswith(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet", False
    raise DataError(f"{role} file {path}: unsupported suffix; use .csv, .csv.gz, .parquet or .pq")


def _input_schema(path: Path, kind: str) -> pa.Schema:
    try:
        if kind == "parquet":
            return pq.read_schema(path).remove_metadata()
        header = pd.read_csv(path, nrows=0, dtype=str)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {path} as {kind} ({type(exc).__name__})") from None
    return pa.schema([pa.field(str(name), pa.string()) for name in header.columns])


def _read_chunks(path: Path, kind: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        if kind == "parquet":
            with pq.ParquetFile(path) as parquet:
                for batch in parquet.iter_batches(batch_size=chunk_rows):
                    yield batch.to_pandas()
        else:
            with pd.read_csv(
                path, chunksize=chunk_rows, dtype=str, keep_default_na=False, na_values=[""]
            ) as reader:
                yield from reader
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read {path} as {kind} ({type(exc).__name__})") from None


@contextmanager
def _writer(path: Path, kind: tuple[str, bool], schema: pa.Schema) -> Iterator[Any]:
    if kind[0] == "parquet":
        with pq.ParquetWriter(path, schema) as writer:
            yield lambda frame: writer.write_table(
                pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            )
        return
    opener: Callable[..., Any] = gzip.open if kind[1] else open
    with opener(path, "wt", encoding="utf-8", newline="") as handle:
        pd.DataFrame(columns=schema.names).to_csv(handle, index=False)
        yield lambda frame: frame.to_csv(handle, index=False, header=False)


def _check_target(target: Path) -> None:
    if not target.parent.is_dir():
        raise DataError(f"output directory {target.parent} does not exist")


def _write_pseudonymized(
    chunks: Iterable[pd.DataFrame],
    target: Path,
    out_kind: tuple[str, bool],
    out_schema: pa.Schema,
    pseudonymizer: Pseudonymizer,
    *,
    email_col: str | None,
    phone_col: str | None,
    id_col: str,
    where: str,
    progress: Callable[[int], None] | None,
) -> PseudonymizeReport:
    """Pseudonymise ``chunks`` into a staging file that replaces ``target`` once complete."""
    report = PseudonymizeReport()
    staging = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
    try:
        with _writer(staging, out_kind, out_schema) as write:
            for chunk in chunks:
                frame, part = pseudonymize_frame(
                    _identities_as_text(chunk, (email_col, phone_col)), pseudonymizer,
                    email_col=email_col, phone_col=phone_col, id_col=id_col
                )
                try:
                    write(frame)
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    changed = _changed_columns(frame, out_schema)
                    raise DataError(
                        f"{where}column(s) {changed} change type between chunks (a number "
                        "column with empty values, or mixed values); cast them in the query "
                        "or write a CSV output"
                    ) from None
                report = report.merge(part)
                if progress is not None:
                    progress(part.rows)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return report


def _identities_as_text(chunk: pd.DataFrame, columns: Iterable[str | None]) -> pd.DataFrame:
    """Identity columns stored as numbers become their digits, as a CSV holds them.

    Parquet and databases keep a phone number's type: 447700900123.0 is '447700900123'.
    """
    for name in filter(None, columns):
        values = chunk[name]
        if values.dtype.kind in "iuf":
            chunk = chunk.assign(**{name: values.astype(object).where(
                values.isna(), values.map(lambda v: str(int(v)) if float(v).is_integer()
                                          else str(v)))})
    return chunk


def _changed_columns(frame: pd.DataFrame, schema: pa.Schema) -> list[str]:
    changed = []
    for item in schema:
        try:
            pa.array(frame[item.name], from_pandas=True).cast(item.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            changed.append(item.name)
    return changed


def pseudonymize_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    pseudonymizer: Pseudonymizer,
    *,
    email_col: str | None = None,
    phone_col: str | None = None,
    id_col: str = "pid",
    chunk_rows: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> PseudonymizeReport:
    """Pseudonymise a CSV or Parquet file chunk by chunk into a CSV or Parquet file.

    Formats follow the suffixes ``.csv``, ``.csv.gz``, ``.parquet``, ``.pq``; CSV is read as
    text so values pass through unchanged. The output replaces ``out_path`` once complete.
    ``progress`` gets each chunk's row count; columns and report are as in
    :func:`pseudonymize_frame`. Bad files, suffixes or columns raise DataError naming them.
    """
    source, target = Path(in_path), Path(out_path)
    in_kind, out_kind = _file_kind(source, "input"), _file_kind(target, "output")
    _check_chunk_rows(chunk_rows)
    if not source.is_file():
        raise DataError(f"input file {source} does not exist")
    _check_target(target)
    if target.exists() and target.resolve() == source.resolve():
        raise DataError(f"output file {target} is the input file; choose another path")
    schema = _input_schema(source, in_kind[0])
    check_identity_columns(schema.names, email_col, phone_col, id_col, f"{source}: ")
    kept = [item for item in schema if item.name not in (email_col, phone_col)]
    out_schema = pa.schema([pa.field(id_col, pa.string()), *kept])
    return _write_pseudonymized(
        _read_chunks(source, in_kind[0], chunk_rows), target, out_kind, out_schema,
        pseudonymizer, email_col=email_col, phone_col=phone_col, id_col=id_col,
        where=f"{source}: ", progress=progress,
    )


def pseudonymize_chunks(
    chunks: Iterable[pd.DataFrame],
    out_path: str | os.PathLike[str],
    pseudonymizer: Pseudonymizer,
    *,
    source: str,
    email_col: str | None = None,
    phone_col: str | None = None,
    id_col: str = "pid",
    progress: Callable[[int], None] | None = None,
) -> PseudonymizeReport:
    """Pseudonymise a table given in chunks (a database query, a Parquet folder) into a file.

    As :func:`pseudonymize_file`, for a table that is not one file: ``source`` names it in
    errors (a database URL without its password). The output's columns and, for Parquet, its
    column types are those of the first chunk (a column empty there is text); a later chunk
    whose types cannot be cast to them is a DataError. Identity columns stored as numbers
    are read as their digits, as in a CSV.
    """
    target = Path(out_path)
    out_kind = _file_kind(target, "output")
    _check_target(target)
    where = f"{source}: "
    iterator = iter(chunks)
    try:
        first = next(iterator, None)
        if first is None:
            raise DataError(f"{where}the table has no rows")
        check_identity_columns([str(c) for c in first.columns], email_col, phone_col, id_col, where)
        kept = _frame_schema(first.drop(columns=[c for c in (email_col, phone_col) if c]))
        out_schema = pa.schema([pa.field(id_col, pa.string()), *kept])
        return _write_pseudonymized(
            itertools.chain([first], iterator), target, out_kind, out_schema, pseudonymizer,
            email_col=email_col, phone_col=phone_col, id_col=id_col, where=where,
            progress=progress,
        )
    finally:  # a reader stopped early closes its connection now, not when collected
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _frame_schema(frame: pd.DataFrame) -> pa.Schema:
    """Arrow types of ``frame``'s columns; a column with no value in it is text."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False).remove_metadata()
    return pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    )


def _check_chunk_rows(chunk_rows: int) -> None:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ContractError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
