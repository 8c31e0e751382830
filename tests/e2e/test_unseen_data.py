"""The CLI on a data set it has never seen: only a spec in the DESIGN format and a column."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from fedprofile.cli import app

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
    frame = pd.read_csv(Path(__file__).parents[2] / "data" / "hillstrom.csv.gz").head(20_000)
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
