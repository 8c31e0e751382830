"""The CLI on a data set it has never seen: only a spec in the DESIGN format and a column."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from fedprofile.cli.commands import app
from fedprofile.resources import DATA, packaged_dir

pytestmark = pytest.mark.slow

SPEC = """
[features.recency]
kind = "numeric"
bounds = [1, 12]

[features.history]
kind = "numeric"
bounds = [0, 5000]
transform = "log1p"

[features.channel]
kind = "categorical"
categories = ["Web", "Phone"]
other = true

[features.newbie]
kind = "numeric"
bounds = [0, 1]
missing = "impute"
default = 0
"""


def test_a_new_csv_with_missing_values_runs_without_code_changes(tmp_path: Path) -> None:
    # Prepare: a file the project does not know, with holes in two columns
    frame = pd.read_csv(packaged_dir(DATA) / "hillstrom.csv.gz").head(20_000)
    rng = np.random.default_rng(0)
    frame.loc[rng.choice(len(frame), 200, replace=False), "history"] = np.nan
    frame.loc[rng.choice(len(frame), 200, replace=False), "newbie"] = np.nan
    data, spec = tmp_path / "shop.csv", tmp_path / "shop.toml"
    frame.to_csv(data, index=False)
    spec.write_text(SPEC)
    # Execute
    result = CliRunner().invoke(app, [
        "sim", "--data", str(data), "--spec", str(spec), "--partition-by", "zip_code",
        "--partners", "3", "--k", "4", "--epsilon", "1", "--out", str(tmp_path / "out"),
        "--state-dir", str(tmp_path / "state")])
    # Assert: a model, a report, missing values dropped or imputed as declared
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["kmeans"]["cost_ratio"] < 1.2
    assert metrics["n_customers"] == 20_000 - 200
    quality = [json.loads(p.read_text())
               for p in (tmp_path / "state" / "partners").glob("*/data_quality.json")]
    assert sum(q["dropped"] for q in quality) == 200
    assert sum(q["imputed"]["newbie"] for q in quality) == 200


TRAPS = SPEC + """
[target.bought]
kind = "binary"
positive = "yes"

[target.flag]
kind = "binary"
positive = "TRUE"

[target.wrong]
kind = "binary"
positive = "1"
"""


def _trap_file(tmp_path: Path) -> tuple[Path, Path]:
    """A small shop file whose labels differ from the contract's only in case or type."""
    frame = pd.read_csv(packaged_dir(DATA) / "hillstrom.csv.gz").head(3_000)
    frame["bought"] = np.where(frame["visit"] == 1, "Yes", "No")  # declared "yes"
    frame["flag"] = frame["visit"] == 1                           # read back as booleans
    frame["wrong"] = frame["bought"]                              # declared "1": no match
    frame.loc[frame.index[::10], "channel"] = "Phnoe"              # a misspelt category
    data, spec = tmp_path / "shop.csv", tmp_path / "shop.toml"
    frame.to_csv(data, index=False)
    spec.write_text(TRAPS)
    return data, spec


def _sim(tmp_path: Path, data: Path, spec: Path, *extra: str) -> tuple[Result, float]:
    start = time.perf_counter()
    result = CliRunner(env={"COLUMNS": "400"}).invoke(app, [
        "sim", "--data", str(data), "--spec", str(spec), "--partition-by", "zip_code",
        "--partners", "3", "--out", str(tmp_path / "out"), "--state-dir",
        str(tmp_path / "state"), *extra])
    return result, time.perf_counter() - start


def _ledger_rows(state: Path) -> int:
    rows = 0
    for db in state.glob("partners/*/ledger.sqlite"):
        with sqlite3.connect(db) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                                  "WHERE type='table'")]
            rows += sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
                        for t in tables)
    return rows


def test_doomed_runs_fail_in_seconds_before_any_release(tmp_path: Path) -> None:
    # Prepare: a positive label that matches no value, a k no federation of 3,000 can fill
    data, spec = _trap_file(tmp_path)
    # Execute
    wrong, wrong_s = _sim(tmp_path, data, spec, "--task", "logistic", "--target", "wrong")
    big_k, big_k_s = _sim(tmp_path, data, spec, "--k", "100")
    alone, _ = _sim(tmp_path, data, spec, "--partners", "1")
    # Assert: one-line errors, no model, no ledger entry, well before Flower would start
    assert wrong.exit_code == 2, wrong.output
    assert "all 3 partners: Target 'wrong' declares positive = '1'" in wrong.output
    assert "Traceback" not in wrong.output and wrong_s < 20
    assert big_k.exit_code == 2 and big_k_s < 20
    assert ("all 3 partners: k=100 segments of at least 50 customers need more customers "
            "than this partner holds") in " ".join(big_k.output.split())
    assert alone.exit_code == 2
    assert "at least min-partners=2 partners" in alone.output
    assert not (tmp_path / "out" / "model.json").exists()
    assert _ledger_rows(tmp_path / "state") == 0


def test_wrong_columns_separators_and_budgets_fail_in_seconds_with_a_hint(
        tmp_path: Path) -> None:
    # Prepare: a contract with a misspelt column, a colon-separated copy of the file, and a
    # policy whose per-run budget is below the run's epsilon
    data, spec = _trap_file(tmp_path)
    misspelt = tmp_path / "misspelt.toml"
    misspelt.write_text(TRAPS.replace("[features.history]", "[features.histroy]"))
    colons = tmp_path / "colons.csv"
    pd.read_csv(data).to_csv(colons, sep=":", index=False)
    policy = tmp_path / "policy.toml"
    policy.write_text("max_epsilon_per_run = 0.5\n")
    # Execute
    column, column_s = _sim(tmp_path, data, misspelt, "--k", "3")
    one, _ = _sim(tmp_path, colons, spec, "--k", "3", "--partition-by", "iid")
    budget, budget_s = _sim(tmp_path, data, spec, "--k", "3", "--policy", str(policy))
    # Assert: one grouped line each, before Flower starts, nothing recorded
    said = [" ".join(r.output.split()) for r in (column, one, budget)]
    assert column.exit_code == 2 and column_s < 20, column.output
    assert ("all 3 partners: <data-path>: missing column(s) ['histroy'] (did you mean "
            "'history'?)") in said[0]
    assert one.exit_code == 2, one.output
    assert "colons.csv': the file reads as one column, but more are needed; it probably " \
           "uses colons (':') as separator" in said[1]
    assert budget.exit_code == 2 and budget_s < 20, budget.output
    assert ("all 3 partners: its policy allows at most epsilon = 0.5 per run; this run "
            "requests epsilon = 1.") in said[2]
    assert "Traceback" not in " ".join(said)
    assert _ledger_rows(tmp_path / "state") == 0


def test_a_segments_run_without_evaluation_is_titled_and_suggests_categories(
        tmp_path: Path) -> None:
    # Prepare: the trap file, whose channel is misspelt 'Phnoe' on a tenth of the rows
    data, spec = _trap_file(tmp_path)
    # Execute
    result, _ = _sim(tmp_path, data, spec, "--k", "3", "--no-evaluate")
    # Assert: a segmentation run, and the close category suggested on the user's console
    said = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "Segmentation run" in said and "Response model run" not in said
    assert ("feature 'channel': 'Phnoe' is not a declared category, counted as (other); did "
            "you mean 'Phone'? (at Surburban, Urban, Rural)") in said
    metrics = (tmp_path / "out" / "metrics.json").read_text()
    assert "Phnoe" not in metrics and "Phnoe" not in (tmp_path / "out" / "report.html").read_text()


def test_labels_differing_in_case_or_type_train_and_quality_is_shown(tmp_path: Path) -> None:
    # Prepare: declared "yes" for Yes/No values, "TRUE" for a column pandas reads as booleans
    data, spec = _trap_file(tmp_path)
    # Execute
    result, _ = _sim(tmp_path, data, spec, "--task", "logistic", "--target", "flag",
                     "--epsilon", "inf")
    # Assert: the model learns (both classes were found), quality counts and warnings shown
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["response"]["federated"]["auc"] == pytest.approx(
        metrics["response"]["centralized"]["auc"], abs=0.01)
    assert metrics["response"]["federated"]["auc"] > 0.55
    assert set(metrics["data_quality"]) == {"Surburban", "Urban", "Rural"}
    assert any("'channel' (other)" in w for w in metrics["warnings"])
    assert "Data quality at each partner" in result.output
    assert "Data quality at each partner" in (tmp_path / "out" / "report.html").read_text()
    assert "did you mean 'Phone'?" in " ".join(result.output.split())


LINES_SPEC = """
[customers]
id = "pid"
date = "InvoiceDay"
snapshot = "2011-12-10"
{date_format}

[customers.rows]
amount = "Quantity * UnitPrice"

[customers.aggregates.recency_days]
function = "recency_days"

[customers.aggregates.frequency]
function = "distinct_count"
source = "InvoiceNo"

[customers.aggregates.monetary]
function = "sum"
source = "amount"
where = "Quantity > 0"

[features.recency_days]
kind = "numeric"
bounds = [0, 400]

[features.frequency]
kind = "numeric"
bounds = [1, 250]
transform = "log1p"

[features.monetary]
kind = "numeric"
bounds = [0, 50000]
transform = "log1p"
"""


def test_transaction_lines_with_tabs_and_integer_dates(tmp_path: Path) -> None:
    # Prepare: raw shop lines, tab-separated in a .csv, dates stored as integers 20101201
    lines = pd.read_parquet(packaged_dir(DATA) / "online_retail.parquet")
    lines = lines.loc[lines["CustomerID"].notna()].head(20_000)
    shop = pd.DataFrame({
        "pid": "c" + lines["CustomerID"].astype(int).astype(str),
        "InvoiceNo": lines["InvoiceNo"], "Quantity": lines["Quantity"],
        "UnitPrice": lines["UnitPrice"],
        "InvoiceDay": pd.to_datetime(lines["InvoiceDate"]).dt.strftime("%Y%m%d").astype(int)})
    data = tmp_path / "shop_lines.csv"
    shop.to_csv(data, sep="\t", index=False)
    undeclared, declared = tmp_path / "undeclared.toml", tmp_path / "declared.toml"
    undeclared.write_text(LINES_SPEC.format(date_format=""))
    declared.write_text(LINES_SPEC.format(date_format='date_format = "%Y%m%d"'))
    buyers = shop.loc[shop["Quantity"] > 0, "pid"].nunique()  # returns only: no monetary

    def sim(spec: Path, out: str) -> Result:
        return CliRunner(env={"COLUMNS": "400"}).invoke(app, [
            "sim", "--data", str(data), "--spec", str(spec), "--partition-by", "iid",
            "--partners", "3", "--k", "3", "--epsilon", "inf", "--out", str(tmp_path / out),
            "--state-dir", str(tmp_path / f"state-{out}")])

    # Execute
    refused = sim(undeclared, "a")
    done = sim(declared, "b")

    # Assert: integers are never epoch nanoseconds; a declared format reads them
    assert refused.exit_code == 2, refused.output
    assert "date_format" in " ".join(refused.output.split())
    assert not (tmp_path / "a" / "model.json").exists()
    assert done.exit_code == 0, done.output
    # the tab separator was found, and the partners hold customers, not lines
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert metrics["n_customers"] == buyers
    assert "customers" in done.output
    assert f"{len(shop):,}" not in done.output.split("Partners")[0]
