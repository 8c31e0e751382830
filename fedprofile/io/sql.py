"""Reading a partner table from a database: read-only, streamed, password kept out of sight.

A database source is an SQLAlchemy URL plus a table name or one ``SELECT``/``WITH`` query.
The query is checked before it runs (one statement, a read), and the connection is opened
read-only as well (PostgreSQL: a read-only transaction; SQLite: ``mode=ro`` and
``query_only``; DuckDB: ``read_only``). Passwords never come from the URL: they come from
``FEDPROFILE_DB_PASSWORD`` or from a file named by ``FEDPROFILE_DB_PASSWORD_FILE`` that only
its owner may read. Every error names the source with its password hidden, in one line.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from fedprofile.errors import DataError

__all__ = ["PASSWORD_ENV", "PASSWORD_FILE_ENV", "SqlSource", "database_password", "is_database_url",
           "read_query"]

PASSWORD_ENV = "FEDPROFILE_DB_PASSWORD"
PASSWORD_FILE_ENV = "FEDPROFILE_DB_PASSWORD_FILE"

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_LITERALS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/", re.S)
_WRITES = re.compile(
    r"\b(insert|update|delete|merge|upsert|drop|alter|create|truncate|grant|revoke|copy|"
    r"call|attach|detach|pragma|vacuum|into)\b", re.I)


def is_database_url(text: str) -> bool:
    """Whether ``text`` looks like an SQLAlchemy URL (``dialect[+driver]://...``)."""
    return bool(_SCHEME.match(text.strip()))


def read_query(query: str) -> str:
    """The SQL to run for a table name or a read query; refuses anything else before it runs.

    A bare (optionally schema-qualified) name reads the whole table. Otherwise the text must
    be one statement starting with ``SELECT`` or ``WITH`` and naming no writing command
    outside string literals (``DELETE``, ``UPDATE``, ``INSERT``, ``SELECT ... INTO`` ...).

    Raises
    ------
    DataError
        If the query is empty, holds several statements or could write.

    Examples
    --------
    >>> read_query("customers")
    'SELECT * FROM customers'
    >>> read_query("DELETE FROM customers")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fedprofile.errors.DataError: The data query must be ... starting with 'DELETE'.
    """
    text = query.strip().rstrip(";").strip()
    if not text:
        raise DataError("The data query is empty; give a table name or one SELECT query.")
    if _IDENTIFIER.match(text):
        return f"SELECT * FROM {text}"
    bare = _LITERALS.sub(" ", text)
    first = bare.split(None, 1)[0].upper() if bare.split() else ""
    if first not in ("SELECT", "WITH"):
        raise DataError("The data query must be a table name or one SELECT/WITH query that "
                        f"reads; got a query starting with {first[:20]!r}.")
    if ";" in bare:
        raise DataError("The data query holds more than one statement (a ';'); give one "
                        "SELECT/WITH query.")
    found = _WRITES.search(bare)
    if found:
        raise DataError(f"The data query names {found.group(1).upper()!r}, which can write or "
                        "change the session; give one SELECT/WITH query that only reads.")
    return text


def database_password() -> str | None:
    """The database password from the environment or an owner-only file, if given."""
    file_name = os.environ.get(PASSWORD_FILE_ENV, "")
    if file_name:
        path = Path(file_name)
        try:
            mode = path.stat().st_mode
        except OSError:
            raise DataError(f"The password file named by {PASSWORD_FILE_ENV} does not exist."
                            ) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise DataError(f"The password file named by {PASSWORD_FILE_ENV} can be read by "
                            f"others (mode {stat.S_IMODE(mode):o}); make it 0600.")
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    return os.environ.get(PASSWORD_ENV) or None


class SqlSource:
    """A database table or read query, read in chunks over a read-only connection.

    Parameters
    ----------
    url : str
        An SQLAlchemy URL without a password (``postgresql+psycopg://user@host/db``,
        ``sqlite:///crm.db``, ``duckdb:///crm.duckdb``).
    query : str
        A table name or one ``SELECT``/``WITH`` query.
    updated_at : str
        Optional column whose maximum changes whenever a row changes; see
        :meth:`fingerprint`.
    """

    def __init__(self, url: str, query: str, *, updated_at: str = "") -> None:
        try:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError
        except ImportError:
            raise DataError("Reading a database needs SQLAlchemy: pip install "
                            "'fedprofile[sql]'.") from None

        try:
            self._url = make_url(url.strip())
        except (ArgumentError, ValueError):
            raise DataError("The data source is not a valid database URL "
                            "(dialect+driver://user@host/database).") from None
        self.label = self._url.render_as_string(hide_password=True)
        if self._url.password is not None:
            raise DataError(f"Database URL {self.label!r} holds a password; remove it and give "
                            f"the password in {PASSWORD_ENV} or in a file (mode 0600) named "
                            f"by {PASSWORD_FILE_ENV}.")
        if not query.strip():
            raise DataError(f"Database source {self.label!r} needs a data query (a table name "
                            "or one SELECT query).")
        self.query = query.strip()
        self.sql = read_query(query)
        if updated_at and not _IDENTIFIER.match(updated_at):
            raise DataError(f"The updated-at column {updated_at!r} must be a plain column "
                            "name.")
        self.updated_at = updated_at
        self._secret: str | None = None

    def __repr__(self) -> str:
        return f"SqlSource({self.label!r}, {self.query!r})"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Texts never to show: the password, once it has been read."""
        return (self._secret,) if self._secret else ()

    def _fail(self, what: str, exc: BaseException | None = None) -> DataError:
        """The error to raise, naming the driver's error class and SQLSTATE.

        The driver's text can quote a value (``invalid input syntax for type integer:
        "..."``), so it is only the error's local detail, never its message.
        """
        detail, said = "", ""
        if exc is not None:
            if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ is not None:
                exc = exc.__cause__  # pandas wraps the driver's error
            orig = getattr(exc, "orig", None) or exc
            state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
            detail = f" ({type(orig).__name__}{f', SQLSTATE {state}' if state else ''})"
            lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
            said = lines[0][:300] if lines else ""
            if self._url.host:  # named once, in the label, which partner errors redact whole
                said = said.replace(f"port {self._url.port}", "port <port>") \
                    .replace(self._url.host, "<host>")
        text = f"Database source {self.label!r}: {what}{detail}."
        for secret in self.secrets:
            text, said = text.replace(secret, "***"), said.replace(secret, "***")
        return DataError(text, local_detail=said)

    def _engine(self) -> Any:
        from sqlalchemy import create_engine, event
        from sqlalchemy.exc import NoSuchModuleError

        url, connect_args = self._url, {}
        backend = url.get_backend_name()
        password = database_password()
        if password and backend not in ("sqlite", "duckdb"):
            self._secret = password
            url = url.set(password=password)
        if backend == "sqlite":
            database = url.database or ""
            if not database or database == ":memory:" or not Path(database).is_file():
                raise self._fail("the SQLite database file does not exist")
            url = url.set(database=f"file:{Path(database).resolve()}?mode=ro",
                          query={**url.query, "uri": "true"})
        elif backend == "duckdb":
            database = url.database or ""
            if not database or database == ":memory:" or not Path(database).is_file():
                raise self._fail("the DuckDB database file does not exist")
            connect_args = {"read_only": True}
        try:
            engine = create_engine(url, connect_args=connect_args, poolclass=_null_pool())
        except (ImportError, NoSuchModuleError) as exc:
            raise self._fail(f"no driver for {url.drivername!r} is installed (pip install "
                             "'fedprofile[sql]', or the dialect's own package)", exc) from None
        if backend == "sqlite":
            event.listen(engine, "connect",
                         lambda dbapi, _rec: dbapi.execute("PRAGMA query_only = ON"))
        return engine

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        engine = self._engine()
        try:
            try:
                conn = engine.connect()
            except SQLAlchemyError as exc:
                raise self._fail("cannot connect (is the server reachable and are the user "
                                 f"and the password in {PASSWORD_ENV} right?)", exc) from None
            with conn:
                if engine.dialect.name == "postgresql":
                    conn = conn.execution_options(postgresql_readonly=True)
                    conn.execute(text("SET TRANSACTION READ ONLY"))
                yield conn
                conn.rollback()
        finally:
            engine.dispose()

    def iter_chunks(self, *, chunk_rows: int, columns: Collection[str] | None = None,
                    text_columns: Collection[str] = ()) -> Iterator[pd.DataFrame]:
        """The query's rows, ``chunk_rows`` at a time, as :func:`~fedprofile.io.tables.iter_table`.

        ``columns`` keeps only those named columns the result has (all, if it has none of
        them); ``text_columns`` are turned into text as written, as a CSV reader would.

        Raises
        ------
        DataError
            If the database cannot be reached, the query fails, or it returns no rows.
        """
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        rows = 0
        with self._connection() as conn:
            try:
                streaming = conn.execution_options(stream_results=True,
                                                   max_row_buffer=chunk_rows)
                for chunk in pd.read_sql_query(text(self.sql), streaming, chunksize=chunk_rows):
                    rows += len(chunk)
                    if len(chunk):
                        yield _prepare(chunk, columns, text_columns)
            except (SQLAlchemyError, pd.errors.DatabaseError) as exc:
                raise self._fail("the data query failed", exc) from None
        if rows == 0:
            raise self._fail("the data query returned no rows")

    def read(self, *, columns: list[str] | None = None, text_columns: Collection[str] = ()
             ) -> pd.DataFrame:
        """The whole result as one table (see :meth:`iter_chunks`)."""
        frame = pd.concat(list(self.iter_chunks(chunk_rows=100_000, columns=None,
                                                text_columns=text_columns)),
                          ignore_index=True)
        if columns is not None:
            absent = [c for c in columns if c not in frame.columns]
            if absent:
                raise self._fail(f"the query result has no column(s) {absent}")
            frame = frame[columns]
        return frame

    def fingerprint(self) -> list[Any] | None:
        """What identifies the result cheaply: row count and ``max(updated_at)``.

        Without a declared ``updated_at`` column an in-place change keeps the row count, so
        no fingerprint is honest: ``None``, and the caller must not reuse a cache.
        """
        if not self.updated_at:
            return None
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        probe = (f"SELECT COUNT(*), MAX({self.updated_at}) FROM ({self.sql}) AS fedprofile_q")
        with self._connection() as conn:
            try:
                count, newest = conn.execute(text(probe)).one()
            except SQLAlchemyError as exc:
                raise self._fail(f"cannot read the updated-at column {self.updated_at!r}",
                                 exc) from None
        return [self.label, self.sql, int(count), str(newest)]


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def _prepare(chunk: pd.DataFrame, columns: Collection[str] | None,
             text_columns: Collection[str]) -> pd.DataFrame:
    if columns is not None:
        chosen = [c for c in chunk.columns if c in columns]
        if chosen:
            chunk = chunk[chosen]
    for name in text_columns:
        if name in chunk.columns:
            values = chunk[name]
            chunk = chunk.assign(**{name: values.astype(object).where(
                values.isna(), values.map(_as_text))})
    return chunk


def _as_text(value: Any) -> Any:
    """A cell as text, as a CSV would hold it (a whole float as an integer)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)

