"""Response models end to end on Flower's simulation engine over the bank data."""

from __future__ import annotations

import json
import math

import pytest

from fedprofile.errors import FedprofileError
from fedprofile.models.response_model import ResponseModel
from fedprofile.models.scoring import score_customers
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.ledger import Ledger
from fedprofile.sim.runner import simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bank():
    return load_preset("bank")


def test_non_private_ridge_through_flower_equals_centralized_ridge(bank, tmp_path) -> None:
    result = simulate(bank.partitions(3), spec_path=bank.spec_path, out_dir=tmp_path / "out",
                      state_dir=tmp_path / "state", seed=0,
                      run_config={"task": "ridge", "target": "balance", "epsilon": math.inf,
                                  "alpha": 2.0})
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["response"]["coef_max_abs_diff_vs_centralized_same_steps"] <= 1e-9
    assert metrics["response"]["federated"]["r2"] == pytest.approx(
        metrics["response"]["centralized"]["r2"], abs=1e-9)
    assert result.model.privacy["non_private"] is True
    assert "balance" not in result.model.feature_names_


def test_private_logistic_through_flower_scores_and_records_every_round(bank, tmp_path) -> None:
    # Execute: segment-free logistic regression at epsilon = 1 with 3 gradient rounds
    result = simulate(bank.partitions(3), spec_path=bank.spec_path, out_dir=tmp_path / "out",
                      state_dir=tmp_path / "state", seed=0,
                      run_config={"task": "logistic", "target": "y", "epsilon": 1.0,
                                  "gd-rounds": 3, "run-id": "e2e-bank-logistic"})
    # Assert: quality close to centralized, the whole plan in each partner's ledger
    resp = result.metrics["response"]
    assert resp["centralized"]["auc"] - resp["federated"]["auc"] < 0.03
    assert result.model.privacy["epsilon_spent"] == pytest.approx(1.0, rel=1e-6)
    for db in (tmp_path / "state" / "partners").glob("*/ledger.sqlite"):
        with Ledger(db) as ledger:
            components = [e.component for e in ledger.events()]
            assert components == ["gram", "gradient", "gradient", "gradient"]
    # and partners can score their own customers locally with the published model
    model = ResponseModel.load(tmp_path / "out" / "model.json")
    scored = score_customers(bank.frame.head(500), response=model, id_column="customer_id")
    assert list(scored.columns) == ["customer_id", "score"]
    assert scored["score"].between(0, 1).all()
    assert (tmp_path / "out" / "report.html").read_text().count("data:image/png") >= 2


def test_ridge_on_a_binary_target_is_refused_with_a_clear_message(bank, tmp_path) -> None:
    with pytest.raises(FedprofileError, match="does not fit the binary target 'y'"):
        simulate(bank.partitions(2), spec_path=bank.spec_path, out_dir=tmp_path / "out",
                 state_dir=tmp_path / "state", evaluate=False,
                 run_config={"task": "ridge", "target": "y", "epsilon": 1.0})

