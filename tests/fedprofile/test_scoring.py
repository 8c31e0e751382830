"""Local scoring: a partner applies published models to its own customers."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedprofile.contract.parser import parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.errors import ContractError, DataError
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.scoring import score_customers
from fedprofile.models.segment_model import SegmentModel
from fedprofile.privacy.keys import generate_key
from fedprofile.privacy.pseudonym import Pseudonymizer

SHOP: dict[str, Any] = {
    "federation": {"name": "shop"},
    "identity": {"email": "email"},
    "customers": {"id": "pid", "aggregates": {
        "lines": {"function": "count"},
        "spend": {"function": "sum", "source": "amount"}}},
    "features": {
        "lines": {"kind": "numeric", "bounds": [0, 10]},
        "spend": {"kind": "numeric", "bounds": [0, 100]},
    },
    "target": {
        "future_spend": {"kind": "numeric", "bounds": [0, 100]},
        "buys": {"kind": "binary", "positive": 1},
    },
}
# Ada: 2 lines, spend 40 -> scaled (-0.3, -0.1); Bob: 1 line, spend 50 -> (-0.4, 0.0)
CENTERS = np.array([[-0.3, -0.1], [-0.4, 0.1]])


def _spec(data: dict[str, Any] = SHOP) -> FeatureSpec:
    return parse_spec(copy.deepcopy(data), source="shop.toml")


def _segments(spec: FeatureSpec) -> SegmentModel:
    return SegmentModel(spec=spec, centers=CENTERS, sizes=np.array([100.0, 100.0]),
                        min_segment_size=10, privacy={}, params={}, partners=["p1", "p2"])


def _response(spec: FeatureSpec, task: str, coef: list[float]) -> ResponseModel:
    return ResponseModel(task=task, spec=spec,
                         target="future_spend" if task == "ridge" else "buys",
                         coef=np.asarray(coef), penalty=1.0, privacy={}, params={},
                         partners=["p1", "p2"])


def _lines() -> pd.DataFrame:
    return pd.DataFrame({
        "email": ["Ada.Lovelace@gmail.com", "adalovelace+news@googlemail.com",
                  "bob@example.org", None],
        "amount": [10.0, 30.0, 50.0, 5.0],
    })


@pytest.fixture(scope="module")
def pseudonymizer() -> Pseudonymizer:
    return Pseudonymizer(generate_key(key_id="k-score"))


def test_segment_and_logistic_score_by_hand(pseudonymizer) -> None:
    # Prepare: decision = 2 * scaled lines: Ada -0.6, Bob -0.8
    spec = _spec()
    response = _response(spec, "logistic", [2.0, 0.0, 0.0])

    # Execute
    out = score_customers(_lines(), response=response, segments=_segments(spec),
                          pseudonymizer=pseudonymizer)

    # Assert: one row per customer; the line without an identifier is dropped
    assert out.columns.tolist() == ["pid", "segment", "score"]
    out = out.set_index("pid")
    ada = pseudonymizer.email("ada.lovelace@gmail.com")
    bob = pseudonymizer.email("bob@example.org")
    assert sorted(out.index) == sorted([ada, bob])
    assert out.loc[ada, "segment"] == 0 and out.loc[bob, "segment"] == 1
    assert out.loc[ada, "score"] == pytest.approx(1 / (1 + math.exp(0.6)))
    assert out.loc[bob, "score"] == pytest.approx(1 / (1 + math.exp(0.8)))


def test_ridge_score_is_in_original_units(pseudonymizer) -> None:
    # Prepare: a constant decision of 1/4 is 75 on the [0, 100] target
    spec = _spec()

    # Execute
    out = score_customers(_lines(), response=_response(spec, "ridge", [0.0, 0.0, 0.25]),
                          pseudonymizer=pseudonymizer)

    # Assert
    assert out.columns.tolist() == ["pid", "score"]
    np.testing.assert_allclose(out["score"], [75.0, 75.0], rtol=1e-12)


def test_segments_only(pseudonymizer) -> None:
    # Execute
    out = score_customers(_lines(), segments=_segments(_spec()), pseudonymizer=pseudonymizer)

    # Assert
    assert out.columns.tolist() == ["pid", "segment"]
    assert sorted(out["segment"].tolist()) == [0, 1]


def test_output_holds_no_raw_identifier(pseudonymizer) -> None:
    # Prepare
    spec = _spec()
    lines = _lines()

    # Execute
    out = score_customers(lines, response=_response(spec, "logistic", [1.0, 1.0, 0.0]),
                          segments=_segments(spec), pseudonymizer=pseudonymizer)

    # Assert
    assert "email" not in out.columns
    cells = set(out.astype(str).to_numpy().ravel())
    assert not any("@" in cell for cell in cells)
    assert not cells & set(lines["email"].dropna())


def test_scoring_with_identity_columns_needs_the_key() -> None:
    spec = _spec()
    with pytest.raises(DataError, match="pseudonymisation key"):
        score_customers(_lines(), segments=_segments(spec))


def test_plain_customer_table_is_scored_with_an_explicit_id_column() -> None:
    # Prepare: a contract without identity or aggregation (one row per customer)
    plain = copy.deepcopy(SHOP)
    del plain["identity"], plain["customers"]
    spec = _spec(plain)
    frame = pd.DataFrame({"customer_id": ["c1", "c2", "c3"], "lines": [2, 1, None],
                          "spend": [40, 50, 10]})

    # Execute
    out = score_customers(frame, response=_response(spec, "ridge", [0.0, 0.0, 0.25]),
                          segments=_segments(spec), id_column="customer_id")
    detected = score_customers(frame, segments=_segments(spec))
    anonymous = score_customers(frame.drop(columns=["customer_id"]), segments=_segments(spec))

    # Assert: a row with a dropped value keeps its id with missing segment and score
    assert out.columns.tolist() == ["customer_id", "segment", "score"]
    assert out["customer_id"].tolist() == ["c1", "c2", "c3"]
    assert out["segment"].tolist()[:2] == [0, 1] and pd.isna(out["segment"][2])
    assert out["score"].tolist()[:2] == [75.0, 75.0] and math.isnan(out["score"][2])
    # without id_column a conventional id column is used, else the output has none
    assert detected.columns.tolist() == ["customer_id", "segment"]
    assert anonymous.columns.tolist() == ["segment"]


def test_an_absent_id_column_raises_contract_error() -> None:
    # Prepare
    plain = copy.deepcopy(SHOP)
    del plain["identity"], plain["customers"]
    spec = _spec(plain)
    frame = pd.DataFrame({"lines": [2], "spend": [40]})

    # Execute / Assert
    with pytest.raises(ContractError, match="no id column 'customer_id'"):
        score_customers(frame, segments=_segments(spec), id_column="customer_id")


def test_scoring_without_a_model_raises_contract_error() -> None:
    with pytest.raises(ContractError, match="response model, a segment model, or both"):
        score_customers(_lines())


def test_models_of_different_contracts_raise_contract_error(pseudonymizer) -> None:
    # Prepare: the same features with other public bounds is another contract
    other = copy.deepcopy(SHOP)
    other["features"]["spend"]["bounds"] = [0, 1000]
    response = _response(_spec(other), "ridge", [0.0, 0.0, 0.25])

    # Execute / Assert
    with pytest.raises(ContractError, match="different contracts"):
        score_customers(_lines(), response=response, segments=_segments(_spec()),
                        pseudonymizer=pseudonymizer)
