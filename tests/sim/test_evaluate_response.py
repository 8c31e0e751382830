"""The simulation's centralized comparison of response models measures like for like."""

from __future__ import annotations

import numpy as np
import pytest

from fedprofile.contract.design import DesignData, design_names, unsupported_columns
from fedprofile.contract.parser import parse_spec
from fedprofile.models.response_model import ResponseModel
from fedprofile.server.regression import solve_ridge
from fedprofile.sim.evaluate_response import evaluate_response

SPEC = parse_spec({
    "federation": {"name": "shop"},
    "features": {"x": {"kind": "numeric", "bounds": [0, 1]},
                 "job": {"kind": "categorical", "categories": ["a", "b"], "other": True}},
    "target": {"spend": {"kind": "numeric", "bounds": [0, 100]}}}, source="shop.toml")


def test_at_epsilon_inf_federated_ridge_equals_centralized_ridge_even_when_clipped() -> None:
    # Prepare: a steep target whose linear predictions leave [-1/2, 1/2] at the edges;
    # the federated model at epsilon = inf is the exact ridge solution
    rng = np.random.default_rng(0)
    n = 2_000
    x = rng.uniform(-0.5, 0.5, n)
    job = np.eye(3)[rng.integers(0, 2, n)]  # nobody holds job=(other)
    z = np.column_stack([x, job, np.ones(n)])
    y = np.clip(2 * x + rng.normal(0, 0.05, n), -0.5, 0.5)
    train, test = slice(0, 1_600), slice(1_600, n)
    coef = solve_ridge(z[train].T @ z[train], z[train].T @ y[train], alpha=1.0)
    model = ResponseModel(task="ridge", spec=SPEC, target="spend", coef=coef, penalty=1.0,
                          privacy={}, params={"alpha": 1.0}, partners=["p1", "p2"])
    design = DesignData(z_train=z[train], y_train=y[train], z_test=z[test], y_test=y[test])
    assert np.abs(z[test] @ coef).max() > 0.5  # the clipping matters here
    # Execute
    out = evaluate_response(model, [design])
    # Assert: the same numbers, and said to be on the scaled target
    assert out["federated"]["r2"] == pytest.approx(out["centralized"]["r2"], abs=1e-9)
    assert out["federated"]["rmse"] == pytest.approx(out["centralized"]["rmse"], abs=1e-9)
    assert "scaled target" in out["scale"]


def test_one_hot_slots_within_two_noise_sds_are_unsupported() -> None:
    names = design_names(SPEC, "spend", 0)
    assert names == ["x", "job=a", "job=b", "job=(other)", "intercept"]
    # x is numeric (never judged), job=(other) is noise only, job=b is held
    diagonal = np.array([0.1, 40.0, 3.0, 1.9, 80.0])
    assert unsupported_columns(SPEC, "spend", 0, diagonal, 1.0) == ["job=(other)"]
    # without noise only a slot nobody holds is unsupported
    assert unsupported_columns(SPEC, "spend", 0, np.array([1, 4, 3, 0, 8.0]), 0.0) == [
        "job=(other)"]
