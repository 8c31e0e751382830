"""`fedprofile sim` over one PostgreSQL table gives the same segments as over the CSV file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from fedprofile.cli.commands import app
from fedprofile.io.sql import PASSWORD_ENV
from fedprofile.io.tables import write_table
from fedprofile.models.segment_model import SegmentModel
from fedprofile.presets.datasets import load_preset

pytestmark = pytest.mark.slow


def _sim(data: str, out: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [
        "sim", "--data", data, *extra, "--spec", "bank", "--partition-by", "marital",
        "--partners", "3", "--k", "4", "--epsilon", "inf", "--seed", "0", "--no-evaluate",
        "--out", str(out / "out"), "--state-dir", str(out / "state")])
    return result.exit_code, result.output


def test_sim_from_postgresql_equals_sim_from_csv_and_never_shows_the_password(
        postgres, tmp_path, monkeypatch) -> None:
    # Prepare: the same bank rows as CSV and as a PostgreSQL table
    frame = load_preset("bank").frame.iloc[:3000]
    csv = write_table(frame, tmp_path / "bank.csv")
    engine = sa.create_engine(postgres.admin_url())
    frame.assign(row_no=np.arange(len(frame))).to_sql("bank_sim", engine, index=False,
                                                      if_exists="replace", chunksize=1000)
    engine.dispose()
    monkeypatch.setenv(PASSWORD_ENV, postgres.password)

    # Execute
    code_csv, _ = _sim(str(csv), tmp_path / "csv")
    code_db, output = _sim(postgres.url(), tmp_path / "db", "--data-query",
                           "SELECT * FROM bank_sim ORDER BY row_no")

    # Assert: identical segments; the password in no output and no file written
    assert code_csv == 0 and code_db == 0, output
    ours = SegmentModel.load(tmp_path / "db" / "out" / "model.json")
    theirs = SegmentModel.load(tmp_path / "csv" / "out" / "model.json")
    np.testing.assert_array_equal(ours.cluster_centers_, theirs.cluster_centers_)
    np.testing.assert_array_equal(ours.segment_sizes_, theirs.segment_sizes_)
    assert postgres.password not in output
    for path in (tmp_path / "db").rglob("*"):
        if path.is_file():
            assert postgres.password.encode() not in path.read_bytes(), path
