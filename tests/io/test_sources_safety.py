"""Database sources are read-only, keep their password secret and never serve a stale cache."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from fedprofile.client.app import error_for
from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.errors import DataError
from fedprofile.io.sql import PASSWORD_ENV, PASSWORD_FILE_ENV, SqlSource, read_query

SPEC = """
[features.age]
kind = "numeric"
bounds = [20, 60]

[features.color]
kind = "categorical"
categories = ["red", "blue"]
"""

WRITES = [
    "DELETE FROM customers",
    "UPDATE customers SET age = 0",
    "INSERT INTO customers VALUES (1, 2, 'red', '2024')",
    "DROP TABLE customers",
    "SELECT * FROM customers; DELETE FROM customers",
    "WITH gone AS (DELETE FROM customers RETURNING *) SELECT * FROM gone",
    "SELECT * INTO copy FROM customers",
    "  delete from customers -- SELECT",
]


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"id": [1, 2, 3, 4], "age": [30, 40, 50, 25],
                         "color": ["red", "blue", "red", "blue"],
                         "updated_at": ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]})


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = sa.create_engine(url)
    _frame().to_sql("customers", engine, index=False)
    engine.dispose()
    return url


@pytest.fixture
def pg_db(postgres, monkeypatch, request) -> str:
    """A PostgreSQL table of the test's own; returns its URL (password in the environment)."""
    table = "s_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    engine = sa.create_engine(postgres.admin_url())
    _frame().to_sql(table, engine, index=False, if_exists="replace")
    engine.dispose()
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    return f"{postgres.url()}#{table}"


def _count(url: str, table: str = "customers") -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(n)


def _site(url: str, query: str, spec: Path, state: Path, **extra: str) -> PartnerSite:
    return PartnerSite(NodeConfig.from_mapping({
        "data-source": url, "data-query": query, "spec": str(spec), "partner-name": "p",
        "state-dir": str(state), **extra}))


# --- read-only --------------------------------------------------------------------------


@pytest.mark.parametrize("query", WRITES)
def test_write_queries_are_refused_before_they_run(query, sqlite_db) -> None:
    # Execute / Assert
    with pytest.raises(DataError, match="data query"):
        SqlSource(sqlite_db, query)
    assert _count(sqlite_db) == 4


@pytest.mark.parametrize("query", [
    "SELECT * FROM customers WHERE color = 'update'",
    "SELECT id, age FROM customers /* delete later */",
    "with recent as (select * from customers) select * from recent;",
    "main.customers",
])
def test_read_queries_pass_the_check(query) -> None:
    assert read_query(query).upper().startswith(("SELECT", "WITH"))


def test_sqlite_connection_is_read_only_even_for_a_statement_that_writes(sqlite_db) -> None:
    # Prepare
    source = SqlSource(sqlite_db, "customers")

    # Execute / Assert: the connection itself refuses to write
    with source._connection() as conn, pytest.raises(sa.exc.OperationalError,
                                                     match=r"readonly|read-only"):
        conn.execute(sa.text("DELETE FROM customers"))
    assert _count(sqlite_db) == 4


def test_duckdb_connection_is_read_only(tmp_path) -> None:
    # Prepare
    import duckdb

    with duckdb.connect(str(tmp_path / "crm.duckdb")) as con:
        con.execute("CREATE TABLE customers AS SELECT 1 AS age")
    source = SqlSource(f"duckdb:///{tmp_path / 'crm.duckdb'}", "customers")

    # Execute / Assert
    with source._connection() as conn, pytest.raises(sa.exc.DBAPIError, match="read-only"):
        conn.execute(sa.text("DELETE FROM customers"))


def test_postgresql_read_only_transaction_stops_a_function_that_writes(pg_db, spec,
                                                                       tmp_path) -> None:
    # Prepare: a function that deletes, called from a SELECT the query check lets through
    url, table = pg_db.split("#")
    admin = url.replace("fedprofile@", f"fedprofile:{os.environ[PASSWORD_ENV]}@")
    engine = sa.create_engine(admin)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE OR REPLACE FUNCTION wipe_{table}() RETURNS SETOF {table} "
                             f"AS 'DELETE FROM {table} RETURNING *' LANGUAGE sql"))
    engine.dispose()

    # Execute / Assert
    with pytest.raises(DataError, match=r"query failed \(ReadOnlySqlTransaction, SQLSTATE "
                                        r"25006\)") as err:
        _site(url, f"SELECT * FROM wipe_{table}()", spec, tmp_path / "state").matrix()
    assert "read-only transaction" in err.value.local_detail and "\n" not in str(err.value)
    assert _count(admin, table) == 4


# --- bad input ----------------------------------------------------------------------------


def test_missing_contract_column_names_the_source(sqlite_db, spec, tmp_path) -> None:
    with pytest.raises(DataError, match=r"crm\.db.*color|color.*crm\.db"):
        _site(sqlite_db, "SELECT id, age FROM customers", spec, tmp_path / "s").matrix()


def test_empty_result_is_refused_in_one_line(sqlite_db, spec, tmp_path) -> None:
    with pytest.raises(DataError, match="returned no rows") as err:
        _site(sqlite_db, "SELECT * FROM customers WHERE age > 100", spec,
              tmp_path / "s").matrix()
    assert "crm.db" in str(err.value) and "\n" not in str(err.value)


def test_failing_query_and_missing_database_are_one_line_errors(sqlite_db, tmp_path) -> None:
    with pytest.raises(DataError, match=r"query failed \(OperationalError\)") as err:
        SqlSource(sqlite_db, "SELECT * FROM no_such_table").read()
    assert "no_such_table" in err.value.local_detail
    with pytest.raises(DataError, match="does not exist"):
        SqlSource(f"sqlite:///{tmp_path / 'absent.db'}", "customers").read()
    assert not (tmp_path / "absent.db").exists()


def test_a_driver_message_quoting_a_value_stays_local(tmp_path) -> None:
    # Prepare: a DuckDB table whose text column holds a canary the query casts to a number
    duckdb = pytest.importorskip("duckdb")
    canary = "canary.3f9a@example.com"
    with duckdb.connect(str(tmp_path / "crm.duckdb")) as conn:
        conn.execute(f"CREATE TABLE customers AS SELECT '{canary}' AS email")
    source = SqlSource(f"duckdb:///{tmp_path / 'crm.duckdb'}",
                       "SELECT CAST(email AS INTEGER) AS n FROM customers")
    # Execute
    with pytest.raises(DataError, match=r"query failed \(\w+\)") as err:
        source.read()
    # Assert: the message (what a reply carries) names the error, the detail quotes the value
    assert canary not in str(err.value)
    assert canary in err.value.local_detail


def test_unreachable_server_is_a_one_line_error(monkeypatch) -> None:
    pytest.importorskip("psycopg")
    monkeypatch.setenv(PASSWORD_ENV, "x")
    with pytest.raises(DataError, match="cannot connect") as err:
        SqlSource("postgresql+psycopg://u@127.0.0.1:9/crm", "customers").read()
    assert "\n" not in str(err.value)


def test_unknown_dialect_is_a_one_line_error() -> None:
    with pytest.raises(DataError, match="no driver for 'nosuchdb'"):
        SqlSource("nosuchdb://u@h/crm", "customers").read()


# --- passwords ------------------------------------------------------------------------------


def test_password_in_the_url_is_refused_without_showing_it(postgres) -> None:
    with pytest.raises(DataError, match="holds a password") as err:
        SqlSource(postgres.admin_url(), "customers")
    assert postgres.password not in str(err.value) and "***" in str(err.value)


def test_wrong_password_is_refused_and_the_canary_never_shows(pg_db, spec, tmp_path,
                                                                monkeypatch, caplog) -> None:
    # Prepare: the right password works; then a wrong one that is itself a canary
    url, table = pg_db.split("#")
    right = os.environ[PASSWORD_ENV]
    site = _site(url, f"SELECT * FROM {table} ORDER BY id", spec, tmp_path / "s")
    assert site.matrix().shape[0] == 4
    wrong = "Wrong-Canary-5k2P"
    monkeypatch.setenv(PASSWORD_ENV, wrong)
    caplog.set_level(logging.DEBUG)

    # Execute
    with pytest.raises(DataError, match="cannot connect") as err:
        _site(url, f"SELECT * FROM {table}", spec, tmp_path / "s2").matrix()
    reply = error_for(err.value, site, "Profile")

    # Assert: neither password anywhere: the error, the reply, the logs, the partner's files
    texts = [str(err.value), err.value.local_detail, reply.reason, caplog.text]
    texts += [p.read_bytes().decode("latin-1") for p in tmp_path.rglob("*") if p.is_file()]
    for text in texts:
        assert right not in text and wrong not in text
    assert "password authentication failed" in err.value.local_detail
    assert "127.0.0.1" not in reply.reason and "<data-source>" in reply.reason


def test_password_file_must_be_owner_only(pg_db, spec, tmp_path, monkeypatch) -> None:
    # Prepare
    url, table = pg_db.split("#")
    secret = tmp_path / "db-password"
    secret.write_text(os.environ[PASSWORD_ENV] + "\n")
    monkeypatch.delenv(PASSWORD_ENV)
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(secret))

    # Execute / Assert: refused while others can read it, read once it is 0600
    secret.chmod(0o644)
    with pytest.raises(DataError, match="make it 0600") as err:
        SqlSource(url, table).read()
    assert str(secret) not in str(err.value)
    secret.chmod(0o600)
    assert len(SqlSource(url, table).read()) == 4


# --- cache --------------------------------------------------------------------------------


def _update(url: str, sql: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(sql))
    engine.dispose()


def _caches(state: Path) -> list[Path]:
    return sorted((state / "cache").glob("matrix-*.npy"))


def test_cache_with_updated_at_is_reused_until_a_row_changes(sqlite_db, spec, tmp_path) -> None:
    # Prepare
    state = tmp_path / "state"
    query = "SELECT * FROM customers ORDER BY id"
    first = np.array(_site(sqlite_db, query, spec, state, **{"data-updated-at": "updated_at"})
                     .matrix())
    (cache,) = _caches(state)
    built = cache.stat().st_mtime_ns

    # Execute: again unchanged, then an in-place change, then a new row
    again = _site(sqlite_db, query, spec, state, **{"data-updated-at": "updated_at"}).matrix()
    reused = _caches(state) == [cache] and cache.stat().st_mtime_ns == built
    _update(sqlite_db, "UPDATE customers SET age = 60, updated_at = '2024-02-01' WHERE id = 1")
    changed = _site(sqlite_db, query, spec, state, **{"data-updated-at": "updated_at"}).matrix()
    _update(sqlite_db, "INSERT INTO customers VALUES (5, 20, 'red', '2024-01-01')")
    grown = _site(sqlite_db, query, spec, state, **{"data-updated-at": "updated_at"}).matrix()

    # Assert
    assert reused and np.array_equal(again, first)
    assert changed[0, 0] == np.float32(0.5) and first[0, 0] != changed[0, 0]
    assert grown.shape[0] == 5 and len(_caches(state)) == 1


def test_cache_without_updated_at_is_never_served_stale(sqlite_db, spec, tmp_path) -> None:
    # Prepare
    state = tmp_path / "state"
    query = "SELECT * FROM customers ORDER BY id"
    first = np.array(_site(sqlite_db, query, spec, state).matrix())

    # Execute: an in-place change keeps the row count
    _update(sqlite_db, "UPDATE customers SET age = 60 WHERE id = 1")
    changed = _site(sqlite_db, query, spec, state).matrix()

    # Assert
    assert first[0, 0] != changed[0, 0] == np.float32(0.5)
    assert len(_caches(state)) == 1


def test_cache_key_follows_the_query_text(sqlite_db, spec, tmp_path) -> None:
    state = tmp_path / "state"
    extra = {"data-updated-at": "updated_at"}
    everyone = _site(sqlite_db, "SELECT * FROM customers", spec, state, **extra).matrix()
    some = _site(sqlite_db, "SELECT * FROM customers WHERE age < 45", spec, state,
                 **extra).matrix()
    assert everyone.shape[0] == 4 and some.shape[0] == 3


def test_postgresql_cache_follows_updated_at(pg_db, spec, tmp_path) -> None:
    url, table = pg_db.split("#")
    admin = url.replace("fedprofile@", f"fedprofile:{os.environ[PASSWORD_ENV]}@")
    state, extra = tmp_path / "state", {"data-updated-at": "updated_at"}
    query = f"SELECT * FROM {table} ORDER BY id"
    first = np.array(_site(url, query, spec, state, **extra).matrix())
    _update(admin, f"UPDATE {table} SET age = 60, updated_at = '2025-01-01' WHERE id = 1")
    changed = _site(url, query, spec, state, **extra).matrix()
    assert first[0, 0] != changed[0, 0] == np.float32(0.5)


# --- wrong types, and nothing released on bad input ---------------------------------------


WRONG_TYPES = {
    "numbers as text": ("age TEXT", ["thirty", "forty", "n/a", "fifty"]),
    "timestamps": ("age TIMESTAMP", ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
    "dates": ("age DATE", ["1990-01-01", "1980-01-02", "1970-01-03", "1995-01-04"]),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_table_with_the_wrong_type_is_refused_in_one_line_naming_the_source(
        case, postgres, spec, tmp_path, monkeypatch) -> None:
    # Prepare: the contract's numeric column 'age' is not a number in the database
    declared, values = WRONG_TYPES[case]
    table = "wrong_" + case.replace(" ", "_")
    engine = sa.create_engine(postgres.admin_url())
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(sa.text(f"CREATE TABLE {table} (id INT, {declared}, color TEXT)"))
        for i, value in enumerate(values):
            conn.execute(sa.text(f"INSERT INTO {table} VALUES (:i, :v, 'red')"),
                         {"i": i, "v": value})
    engine.dispose()
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)
    site = _site(postgres.url(), f"SELECT * FROM {table}", spec, tmp_path / "s")

    # Execute
    with pytest.raises(DataError) as err:
        site.matrix()

    # Assert: one line naming the source (not its password) and the column
    text = str(err.value)
    assert f"fedprofile@127.0.0.1:{postgres.port}/postgres" in text
    assert "column 'age' (feature 'age') holds no numeric values" in text
    assert "\n" not in text and postgres.password not in text
    assert not list((tmp_path / "s").glob("cache/matrix-*.npy"))


def _bad_source(case: str, sqlite_db: str, tmp_path: Path) -> tuple[str, str, str]:
    """(URL, query, expected message) of one bad input."""
    if case == "unreachable database":
        return "postgresql+psycopg://u@127.0.0.1:9/crm", "customers", "cannot connect"
    if case == "failing query":
        return sqlite_db, "SELECT * FROM nowhere", "query failed"
    if case == "no rows":
        return sqlite_db, "SELECT * FROM customers WHERE age > 100", "returned no rows"
    if case == "missing column":
        return sqlite_db, "SELECT id, age FROM customers", "missing column(s) ['color']"
    if case == "wrong type":
        return sqlite_db, "SELECT id, color AS age, color FROM customers", "no numeric values"
    return sqlite_db, "DELETE FROM customers", "SELECT/WITH"


@pytest.mark.parametrize("case", ["unreachable database", "failing query", "no rows",
                                  "missing column", "wrong type", "write query"])
def test_bad_input_is_an_error_reply_and_nothing_is_released(case, sqlite_db, spec, tmp_path,
                                                             monkeypatch) -> None:
    # Prepare: a partner announced a run over a bad source
    from fedprofile.client.app import profile
    from fedprofile.contract.parser import load_spec
    from fedprofile.protocol import ProfileRequest
    from fedprofile.server.kmeans import plan_kmeans

    pytest.importorskip("psycopg")
    monkeypatch.setenv(PASSWORD_ENV, "Canary-unreachable-8q")
    url, query, message = _bad_source(case, sqlite_db, tmp_path)
    contract = load_spec(spec)
    events = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3,
                         norm_bound=contract.norm_bound).events()
    request = ProfileRequest(run_id="r1", spec_fingerprint=contract.fingerprint(),
                             epsilon_target=1.0, delta=1e-6, stages=("kmeans",),
                             planned_events=events, min_segment_size=50, k=2)
    state = tmp_path / "state"

    # Execute
    site = None
    try:
        site = _site(url, query, spec, state)
        profile(request, site)
    except DataError as exc:
        error, reply = exc, error_for(exc, site, "Profile")
    else:
        pytest.fail("the bad source was accepted")

    # Assert: a one-line refusal naming the problem; no release in the partner's ledger; the
    # partner's database unchanged
    assert message in str(error) and "\n" not in str(error) and "\n" not in reply.reason
    assert "Canary-unreachable-8q" not in str(error) + reply.reason
    if site is not None:
        assert site.ledger.events() == []
        assert not list(state.glob("cache/matrix-*.npy"))
    assert _count(sqlite_db) == 4
