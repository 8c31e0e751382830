"""A wrong contract column or a file read as one column: errors that say what to change.

The partner reads only the contract's columns of its table, so the hint must come from the
table's real header, for every kind of source.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from fedprofile.client.site import PartnerSite
from fedprofile.config import NodeConfig
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import parse_spec
from fedprofile.errors import DataError
from fedprofile.io.tables import iter_table, read_table

SPEC = """
[features.tenure]
kind = "numeric"
bounds = [0, 72]

[features.monthly_charges]
kind = "numeric"
bounds = [0, 200]

[features.contract]
kind = "categorical"
categories = ["month", "year"]
other = true
"""


def _frame(n: int = 60) -> pd.DataFrame:
    return pd.DataFrame({"customer": [f"CANARY-{i}" for i in range(n)],
                         "Tenure": [i % 72 for i in range(n)],
                         "MonthlyCharges": [20.0 + i for i in range(n)],
                         "contract": ["month", "year"] * (n // 2)})


def _site(tmp_path: Path, data: Path) -> PartnerSite:
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    return PartnerSite(NodeConfig(data_path=str(data), spec=str(spec), partner_name="acme",
                                  state_dir=str(tmp_path / "state")))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_wrong_column_names_close_matches_from_the_real_header(tmp_path: Path,
                                                                 suffix: str) -> None:
    # Prepare: the file spells 'Tenure' and 'MonthlyCharges'; the contract does not
    data = tmp_path / f"churn{suffix}"
    frame = _frame()
    frame.to_csv(data, index=False) if suffix == ".csv" else frame.to_parquet(data)
    # Execute
    with pytest.raises(DataError) as info:
        _site(tmp_path, data).matrix()
    # Assert: both missing columns named, each with its close match; no data value
    text = str(info.value)
    assert "missing column(s) ['monthly_charges', 'tenure']" in text
    assert "'monthly_charges': did you mean 'MonthlyCharges'?" in text
    assert "'tenure': did you mean 'Tenure'?" in text
    assert "CANARY" not in text


def test_a_table_read_as_one_column_names_the_separator_it_probably_uses() -> None:
    # Prepare: a ';'-separated header read as one column (e.g. by a database export)
    frame = pd.DataFrame({"tenure;monthly_charges;contract": ["1;20.5;month"] * 30})
    # Execute
    with pytest.raises(DataError) as info:
        transform_frame(frame, parse_spec(tomllib.loads(SPEC)), source="churn")
    # Assert: said as one column, with the separator; not as missing columns
    assert str(info.value).startswith("churn: the file reads as one column, but the contract "
                                      "needs 3; it probably uses semicolons (';') as separator")
    assert "missing column" not in str(info.value)


def test_a_colon_separated_csv_names_its_separator(tmp_path: Path) -> None:
    # Prepare: ':' is not a separator read; values holding commas break the lines
    path = tmp_path / "churn.csv"
    path.write_text("tenure:charges:plan\n1:20.5:month\n2:1,000,000.5:year\n", encoding="utf-8")
    # Execute
    with pytest.raises(DataError) as info:
        read_table(path)
    chunks = list(iter_table(path, chunk_rows=10))
    # Assert: read whole, it is refused naming the separator; in chunks, one column is read
    # (which the contract's check then names: see the test above)
    assert "reads as one column, but more are needed; it probably uses colons (':')" \
        in str(info.value)
    assert [list(c.columns) for c in chunks] == [["tenure:charges:plan"]]
