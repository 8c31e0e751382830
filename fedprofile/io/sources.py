"""Where a partner's table lives: a file, a folder of Parquet files, or a database.

:func:`open_source` turns what the partner gives (a path or an SQLAlchemy URL, plus a table
name or query for a database) into a :class:`DataSource`, whose chunks feed the matrix cache
exactly as a file's do, and whose :meth:`~DataSource.fingerprint` keys that cache.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from fedprofile.errors import DataError
from fedprofile.io.sql import SqlSource, is_database_url
from fedprofile.io.tables import iter_table, read_table

__all__ = ["DataSource", "FileSource", "ParquetDirSource", "SqlSource", "open_source"]


class DataSource(Protocol):
    """A partner table, read whole or in chunks, with errors naming ``label``."""

    label: str
    """How errors and logs name the source (never a password)."""

    def read(self, *, columns: list[str] | None = None, text_columns: Collection[str] = ()
             ) -> pd.DataFrame:
        """The whole table."""
        ...

    def iter_chunks(self, *, chunk_rows: int, columns: Collection[str] | None = None,
                    text_columns: Collection[str] = ()) -> Iterator[pd.DataFrame]:
        """The table in chunks of at most ``chunk_rows`` rows."""
        ...

    def fingerprint(self) -> list[Any] | None:
        """What changes whenever the table can have changed; ``None``: never reuse a cache."""
        ...


class FileSource:
    """A CSV, gzip'd CSV or Parquet file (:mod:`fedprofile.io.tables`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = str(path)

    def read(self, *, columns: list[str] | None = None, text_columns: Collection[str] = ()
             ) -> pd.DataFrame:
        """The whole file (:func:`~fedprofile.io.tables.read_table`)."""
        return read_table(self.path, columns=columns, text_columns=text_columns)

    def iter_chunks(self, *, chunk_rows: int, columns: Collection[str] | None = None,
                    text_columns: Collection[str] = ()) -> Iterator[pd.DataFrame]:
        """The file in chunks (:func:`~fedprofile.io.tables.iter_table`)."""
        return iter_table(self.path, chunk_rows=chunk_rows, columns=columns,
                          text_columns=text_columns)

    def fingerprint(self) -> list[Any]:
        """The file's resolved path, size and modification time."""
        try:
            st = self.path.stat()
        except OSError:
            raise DataError(f"Data file {self.label!r} does not exist.") from None
        return [str(self.path.resolve()), st.st_size, st.st_mtime_ns]


class ParquetDirSource:
    """A folder of Parquet files (a partitioned data set, read with :mod:`pyarrow.dataset`).

    Hive-style partition folders (``country=FR/part-0.parquet``) become columns.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.label = str(path)

    def _files(self) -> list[Path]:
        files = sorted(p for p in self.path.rglob("*") if p.is_file()
                       and p.suffix.lower() in (".parquet", ".pq")
                       and not p.name.startswith((".", "_")))
        if not files:
            raise DataError(f"Data folder {self.label!r} holds no Parquet files.")
        return files

    def _dataset(self) -> Any:
        import pyarrow as pa
        import pyarrow.dataset as ds

        files = self._files()
        try:
            return ds.dataset([str(f) for f in files], format="parquet",
                              partitioning=ds.partitioning(flavor="hive"),
                              partition_base_dir=str(self.path))
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"Data folder {self.label!r} could not be read as a Parquet data "
                            f"set ({type(exc).__name__}).") from None

    def iter_chunks(self, *, chunk_rows: int, columns: Collection[str] | None = None,
                    text_columns: Collection[str] = ()) -> Iterator[pd.DataFrame]:
        """The files' rows in chunks, in file order; memory bounded by one batch.

        Parquet keeps its column types, so ``text_columns`` needs no conversion (as for a
        Parquet file).
        """
        import pyarrow as pa

        dataset = self._dataset()
        names = dataset.schema.names
        chosen = [c for c in names if columns is None or c in columns] or list(names)
        rows = 0
        try:
            for batch in dataset.to_batches(columns=chosen, batch_size=chunk_rows,
                                            use_threads=False):
                if batch.num_rows:
                    rows += batch.num_rows
                    yield _plain(batch.to_pandas())
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"Data folder {self.label!r} could not be read "
                            f"({type(exc).__name__}).") from None
        if rows == 0:
            raise DataError(f"Data folder {self.label!r} has no rows.")

    def read(self, *, columns: list[str] | None = None, text_columns: Collection[str] = ()
             ) -> pd.DataFrame:
        """All files as one table."""
        frame = pd.concat(list(self.iter_chunks(chunk_rows=1 << 20,
                                                text_columns=text_columns)),
                          ignore_index=True)
        if columns is not None:
            absent = [c for c in columns if c not in frame.columns]
            if absent:
                raise DataError(f"Data folder {self.label!r} has no column(s) {absent}.")
            frame = frame[columns]
        return frame

    def fingerprint(self) -> list[Any]:
        """Every file's relative path, size and modification time."""
        out: list[Any] = [str(self.path.resolve())]
        for f in self._files():
            st = f.stat()
            out.append([str(f.relative_to(self.path)), st.st_size, st.st_mtime_ns])
        return out


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Partition columns come back as pandas categoricals: plain values, as from a file."""
    for name in frame.columns:
        if isinstance(frame[name].dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(frame[name].cat.categories.dtype)
    return frame


def open_source(location: str | Path, query: str = "", *, updated_at: str = "") -> DataSource:
    """The data source named by ``location`` (and ``query`` for a database).

    Parameters
    ----------
    location : str or Path
        A CSV/gzip CSV/Parquet file, a folder of Parquet files, or an SQLAlchemy URL
        without a password.
    query : str
        For a database: a table name or one ``SELECT``/``WITH`` query.
    updated_at : str
        For a database: a column whose maximum changes whenever a row changes, which lets
        the partner's matrix cache be reused while it does not.

    Raises
    ------
    DataError
        If a query is given for a file, or the database source is refused
        (see :class:`~fedprofile.io.sql.SqlSource`).
    """
    text = str(location)
    if is_database_url(text):
        return SqlSource(text, query, updated_at=updated_at)
    if query.strip():
        raise DataError(f"A data query is given, but the data source {text!r} is a path, not "
                        "a database URL.")
    path = Path(text)
    if path.is_dir():
        return ParquetDirSource(path)
    return FileSource(path)
