"""Tests of the data-quality report: close-match hints, all-clipped or constant columns, summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.contract.features import DataQualityReport, transform_frame
from fedprofile.contract.parser import parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import DataError
from fedprofile.io.matrix_store import frame_chunks, write_matrix


def _spec() -> FeatureSpec:
    return parse_spec({
        "federation": {"name": "t"},
        "features": {
            "tenure": {"kind": "numeric", "bounds": [0, 120]},
            "month": {"kind": "categorical", "categories": ["Jan", "Feb", "Jun"]},
        },
    }, source="t.toml")


def _frame(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame({"tenure": np.arange(n) % 100 + 1,
                         "month": (["Jan", "Feb", "June", "Jun"] * n)[:n]})


def test_wrong_column_case_suggests_the_column() -> None:
    """'Tenure' declared, 'tenure' in the file: the error says did you mean 'tenure'?."""
    frame = _frame().rename(columns={"tenure": "Tenure"})
    spec = parse_spec({"features": {
        "tenure": {"kind": "numeric", "bounds": [0, 120], "column": "tenure"},
        "month": {"kind": "categorical", "categories": ["Jan"]}}}, source="t.toml")
    with pytest.raises(DataError, match=r"\['tenure'\] \(did you mean 'Tenure'\?\)"):
        transform_frame(frame, spec)


def test_several_missing_columns_each_get_their_hint() -> None:
    frame = _frame().rename(columns={"tenure": "Tenur", "month": "MONTH"})
    with pytest.raises(DataError, match=r"'month': did you mean 'MONTH'\?; 'tenure': did you "
                                        r"mean 'Tenur'\?"):
        transform_frame(frame, _spec())


def test_other_values_get_local_suggestions_only() -> None:
    """'June' goes to (other), and the local report suggests 'Jun'; the summary does not."""
    report = transform_frame(_frame(), _spec()).report
    assert report.other_category["month"] == 10
    assert report.to_dict()["other_suggestions"] == {"month": {"June": "Jun"}}
    assert "June" not in json.dumps(report.summary())


def test_suggestions_never_enter_an_error() -> None:
    """A refused table's error names columns, not the undeclared values it holds."""
    frame = _frame().assign(tenure="n/a")
    with pytest.raises(DataError) as info:
        transform_frame(frame, _spec())
    assert "June" not in str(info.value)


def test_suggestions_survive_chunking(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[35, "month"] = "feb"
    report = write_matrix(frame_chunks(frame, 7), _spec(), tmp_path / "m.npy")
    assert report.other_suggestions == {"month": {"June": "Jun", "feb": "Feb"}}
    assert report.to_dict() == transform_frame(frame, _spec()).report.to_dict()


def test_all_values_clipped_is_a_data_error() -> None:
    """Tenure in days against bounds in months: every value clipped, refused naming it."""
    frame = _frame().assign(tenure=lambda f: f["tenure"] * 30 + 200)
    with pytest.raises(DataError, match=r"column 'tenure' \(feature 'tenure'\).*outside the "
                                        r"contract's bounds") as info:
        transform_frame(frame, _spec(), source="p.csv")
    assert "230" not in str(info.value)


def test_few_customers_all_clipped_are_accepted() -> None:
    frame = _frame(19).assign(tenure=500)
    assert transform_frame(frame, _spec()).report.clipped["tenure"] == 19


def test_single_value_inside_bounds_is_a_data_error() -> None:
    frame = _frame().assign(tenure=12)
    with pytest.raises(DataError, match=r"feature 'tenure'\).*same value"):
        transform_frame(frame, _spec())


def test_single_value_at_a_bound_is_accepted_with_a_warning() -> None:
    """All zero (none yet) is plausible data: accepted, and the summary warns."""
    report = transform_frame(_frame().assign(tenure=0), _spec()).report
    assert report.constant_features() == ["tenure"]
    assert "Feature 'tenure': every customer has the same value." in report.summary()["warnings"]


def test_constant_check_spans_chunks(tmp_path: Path) -> None:
    """Chunks each constant but different are fine; constant across all chunks is refused."""
    frame = _frame().assign(tenure=np.repeat([5, 6, 7, 8], 10))
    write_matrix(frame_chunks(frame, 10), _spec(), tmp_path / "a.npy")
    with pytest.raises(DataError, match="same value"):
        write_matrix(frame_chunks(frame.assign(tenure=5), 10), _spec(), tmp_path / "b.npy")


def test_summary_counts_shares_and_warnings() -> None:
    """Per-feature counts and shares; a warning for each share above 5 %."""
    frame = _frame(100).astype({"tenure": object})
    frame.loc[:1, "tenure"] = 500            # 2 % clipped: no warning
    frame.loc[2:9, "tenure"] = "x"           # 8 % unparseable (dropped): warnings
    report = transform_frame(frame, _spec()).report
    summary = report.summary()
    tenure = summary["features"]["tenure"]
    assert (tenure["clipped"], tenure["unparseable"], tenure["dropped"]) == (2, 8, 8)
    assert tenure["clipped_share"] == pytest.approx(0.02)
    assert summary["features"]["month"]["other"] == 25
    assert summary["dropped_share"] == pytest.approx(0.08)
    text = " ".join(summary["warnings"])
    assert "'tenure': 8.0 % of the rows are not numbers" in text
    assert "'month': 25.0 % of the rows are not declared categories" in text
    assert "clipped" not in text
    assert summary["warnings"][0].startswith("8.0 % of the rows were dropped")


def test_report_round_trips_through_its_json() -> None:
    report = transform_frame(_frame(), _spec()).report
    again = DataQualityReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.to_dict() == report.to_dict()
    assert again.summary() == {**report.summary(), "warnings": again.summary()["warnings"]}
