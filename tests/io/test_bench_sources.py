"""`fedprofile bench sources` reads the same rows from every source into the same cache."""

from __future__ import annotations

from typer.testing import CliRunner

from fedprofile.cli.commands import app
from fedprofile.io.sql import PASSWORD_ENV
from fedprofile.sim.bench_sources import source_table, sources_run


def test_every_source_gives_the_csv_matrix_and_is_measured(postgres, tmp_path,
                                                           monkeypatch) -> None:
    # Prepare
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)

    # Execute
    rows = sources_run(tmp_path, customers=1200, postgres=postgres.url(),
                       kinds=["csv", "parquet", "parquet-dir", "postgresql"])

    # Assert: every source read all rows into a byte-identical cache, with measurements
    assert [r.source for r in rows] == ["csv", "parquet", "parquet-dir", "postgresql"]
    assert all(r.customers == 1200 and r.seconds > 0 and r.peak_rss_mb >= r.base_rss_mb > 0
               for r in rows)
    assert [r.same_as_csv for r in rows] == [None, True, True, True]
    table = source_table(rows)
    assert "| postgresql | 1,200 |" in table and "NO" not in table
    assert postgres.password not in table


def test_postgresql_without_a_database_url_is_a_one_line_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["bench", "sources", "--customers", "100",
                                      "--folder", str(tmp_path)])
    assert result.exit_code == 2 and "--postgres URL" in result.output
    assert not (tmp_path / "100").exists()
