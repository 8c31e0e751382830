"""The published response model: JSON round trip, prediction in original units, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedprofile.contract.parser import parse_spec
from fedprofile.contract.spec import FeatureSpec
from fedprofile.contract.targets import unscale_target
from fedprofile.errors import ContractError
from fedprofile.models.response_model import FORMAT, VERSION, ResponseModel

L101 = math.log(101.0)

SPEC: dict[str, Any] = {
    "federation": {"name": "toy"},
    "features": {
        "age": {"kind": "numeric", "bounds": [20, 60]},
        "color": {"kind": "categorical", "categories": ["red", "blue"]},
        "spend": {"kind": "numeric", "bounds": [0, 100], "transform": "log1p",
                  "missing": "impute", "default": 0},
    },
    "target": {
        "spend": {"kind": "numeric", "bounds": [0, 100], "transform": "log1p"},
        "bought": {"kind": "binary", "positive": "yes"},
    },
}
PRIVACY = {"epsilon_target": 1.0, "epsilon_spent": 1.0, "delta": 1e-6, "non_private": False}


def _spec() -> FeatureSpec:
    return parse_spec(SPEC, source="toy.toml")


def _model(task: str, coef: list[float], *, centers: np.ndarray | None = None
           ) -> ResponseModel:
    target = "spend" if task == "ridge" else "bought"
    return ResponseModel(task=task, spec=_spec(), target=target, coef=np.asarray(coef),
                         penalty=1.25, privacy=PRIVACY, params={"alpha": 1.0, "task": task},
                         partners=["north", "south"], segment_centers=centers)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({"age": [30, 60, None, 40], "color": ["red", "blue", "red", "green"],
                         "spend": [5, 50, 1, None]})


# Design of "spend": [age, color=red, color=blue, color=(other), intercept] (its own feature
# column is left out); design of "bought": [age, color x3, spend, intercept].
RIDGE_COEF = [0.4, 0.0, 0.0, 0.0, 0.1]
LOGISTIC_COEF = [4.0, 0.0, 0.0, 0.0, 0.0, 0.0]


# --- save / load ------------------------------------------------------------------------------


@pytest.mark.parametrize(("task", "coef"), [("ridge", RIDGE_COEF), ("logistic", LOGISTIC_COEF)])
@pytest.mark.parametrize("segments", [False, True], ids=["plain", "segment-aware"])
def test_save_and_load_round_trip(tmp_path: Path, task, coef, segments) -> None:
    # Prepare
    centers = np.array([[-0.4, 1, 0, 0, 0.1], [0.3, 0, 1, 0, -0.2]]) if segments else None
    coef = [*coef[:-1], 0.5, -0.5, *coef[-1:]] if segments else coef
    model = _model(task, coef, centers=centers)

    # Execute
    path = model.save(tmp_path / "out" / "model.json")
    loaded = ResponseModel.load(path)

    # Assert
    assert (loaded.task, loaded.target, loaded.penalty_) == (model.task, model.target, 1.25)
    np.testing.assert_array_equal(loaded.coef_, model.coef_)
    assert loaded.feature_names_ == model.feature_names_
    np.testing.assert_array_equal(loaded.segment_centers, model.segment_centers)
    assert loaded.segment_centers.shape == ((2, 5) if segments else (0, 5))
    assert loaded.privacy == PRIVACY
    assert (loaded.params, loaded.partners) == (model.params, model.partners)
    assert loaded.created_at == model.created_at
    assert loaded.spec.fingerprint() == model.spec.fingerprint()
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert (doc["format"], doc["version"]) == (FORMAT, VERSION)
    assert doc["spec_fingerprint"] == model.spec.fingerprint()


def test_segment_aware_model_names_its_segment_columns() -> None:
    # Execute
    model = _model("ridge", [0.4, 0, 0, 0, 0.5, -0.5, 0.1],
                   centers=np.zeros((2, 5)))

    # Assert
    assert model.feature_names_ == ["age", "color=red", "color=blue", "color=(other)",
                                    "segment=0", "segment=1", "intercept"]


def test_non_finite_privacy_values_are_written_as_strings(tmp_path: Path) -> None:
    # Prepare: a non-private run (epsilon = inf) must still be strict JSON
    model = ResponseModel(task="ridge", spec=_spec(), target="spend",
                          coef=np.asarray(RIDGE_COEF), penalty=1.0,
                          privacy={"epsilon_spent": math.inf, "non_private": True},
                          params={}, partners=[])

    # Execute
    path = model.save(tmp_path / "model.json")

    # Assert
    assert "Infinity" not in path.read_text(encoding="utf-8")
    assert ResponseModel.load(path).privacy == {"epsilon_spent": "inf", "non_private": True}


@pytest.mark.parametrize(("document", "match"), [
    ("not json {", "JSON"),
    (json.dumps({"format": "fedprofile.segment_model", "version": 1}),
     "fedprofile.response.model"),
    (json.dumps([1, 2, 3]), "model.json"),
    (json.dumps({"format": FORMAT, "version": VERSION + 1}), "version 2"),
], ids=["invalid-json", "segment-model", "not-an-object", "newer-version"])
def test_load_rejects_a_file_that_is_not_a_readable_model(tmp_path: Path, document,
                                                          match) -> None:
    # Prepare
    path = tmp_path / "model.json"
    path.write_text(document, encoding="utf-8")

    # Execute / Assert: the error names the file and the problem
    with pytest.raises(ContractError, match=match) as info:
        ResponseModel.load(path)
    assert "model.json" in str(info.value)


def test_load_of_a_missing_file_raises_contract_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="does not exist"):
        ResponseModel.load(tmp_path / "absent.json")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"task": "lasso"}, "Unknown response task"),
    ({"target": "churn"}, "not declared"),
    ({"coef": np.zeros(3)}, "3 coefficients for 5 design columns"),
], ids=["unknown-task", "undeclared-target", "wrong-length"])
def test_constructor_rejects_inconsistent_models(kwargs, match) -> None:
    # Prepare
    args: dict[str, Any] = {"task": "ridge", "spec": _spec(), "target": "spend",
                            "coef": np.asarray(RIDGE_COEF), "penalty": 1.0, "privacy": {},
                            "params": {}, "partners": [], **kwargs}

    # Execute / Assert
    with pytest.raises(ContractError, match=match):
        ResponseModel(**args)


# --- prediction -------------------------------------------------------------------------------


def test_ridge_predicts_in_original_units_by_hand() -> None:
    # Prepare: decision = 0.4 * scaled age + 0.1; ages 30, 60, -, 40 give 0, 0.3, -, 0.1
    model = _model("ridge", RIDGE_COEF)

    # Execute
    predicted = model.predict(_frame())

    # Assert: unscale: expm1((d + 1/2) ln 101) = 101**(d + 1/2) - 1
    assert predicted.index.tolist() == [0, 1, 2, 3]
    assert math.isnan(predicted[2])
    np.testing.assert_allclose(predicted[[0, 1, 3]],
                               [101**0.5 - 1, 101**0.8 - 1, 101**0.6 - 1], rtol=1e-12)
    np.testing.assert_allclose(
        predicted[[0, 1, 3]],
        unscale_target(np.array([0.0, 0.3, 0.1]), model.spec.targets["spend"]), rtol=1e-12)


def test_ridge_prediction_is_clipped_to_the_target_bounds() -> None:
    # Prepare: decisions far outside [-1/2, 1/2]
    high, low = _model("ridge", [0, 0, 0, 0, 3.0]), _model("ridge", [0, 0, 0, 0, -3.0])

    # Execute / Assert
    np.testing.assert_allclose(high.predict(_frame()).dropna(), 100.0, rtol=1e-12)
    np.testing.assert_allclose(low.predict(_frame()).dropna(), 0.0, atol=1e-12)


def test_logistic_predicts_classes_and_probabilities_by_hand() -> None:
    # Prepare: decision = 4 * scaled age: ages 30, 60, -, 40 give -1, 2, -, 0
    model = _model("logistic", LOGISTIC_COEF)

    # Execute
    classes = model.predict(_frame())
    proba = model.predict_proba(_frame())

    # Assert
    assert classes[[0, 1, 3]].tolist() == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(proba[[0, 1, 3]],
                               [1 / (1 + math.e), 1 / (1 + math.exp(-2.0)), 0.5], rtol=1e-12)
    assert math.isnan(classes[2]) and math.isnan(proba[2])


def test_logistic_probabilities_stay_strictly_between_zero_and_one() -> None:
    # Prepare
    model = _model("logistic", [1.5, -0.7, 0.2, 0.9, 0.8, -0.3])
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.uniform(0, 100, 200),
                          "color": rng.choice(["red", "blue", "green"], 200),
                          "spend": rng.uniform(0, 500, 200)})

    # Execute
    proba = model.predict_proba(frame)

    # Assert
    assert proba.notna().all()
    assert ((proba > 0) & (proba < 1)).all()
    assert set(model.predict(frame)) <= {0.0, 1.0}


def test_predict_proba_of_a_ridge_model_raises_contract_error() -> None:
    with pytest.raises(ContractError, match="only defined for logistic"):
        _model("ridge", RIDGE_COEF).predict_proba(_frame())


def test_segment_aware_model_adds_the_nearest_segment_to_the_design() -> None:
    # Prepare: two centres, young red customers and older blue ones
    centers = np.array([[-0.3, 1, 0, 0, 0.0], [0.3, 0, 1, 0, 0.0]])
    model = _model("ridge", [0, 0, 0, 0, -0.2, 0.2, 0.0], centers=centers)
    frame = pd.DataFrame({"age": [25, 55], "color": ["red", "blue"], "spend": [0, 0]})

    # Execute
    z, keep = model.design(frame)

    # Assert
    np.testing.assert_array_equal(z[:, 4:6], [[1, 0], [0, 1]])
    np.testing.assert_allclose(model.decision(z), [-0.2, 0.2], rtol=0, atol=1e-15)
    assert keep.all()


# --- coefficients -----------------------------------------------------------------------------


def test_coefficients_name_every_design_column() -> None:
    # Execute
    rows = _model("logistic", [4.0, 0.1, 0.2, 0.3, 0.5, -1.0]).coefficients()

    # Assert: per_unit only for numeric features without transform: 4 * 1 / (60 - 20)
    assert [r["name"] for r in rows] == ["age", "color=red", "color=blue", "color=(other)",
                                         "spend", "intercept"]
    assert [r["scaled"] for r in rows] == [4.0, 0.1, 0.2, 0.3, 0.5, -1.0]
    assert rows[0]["per_unit"] == pytest.approx(0.1)
    assert all("per_unit" not in r for r in rows[1:])
