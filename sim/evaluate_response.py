"""Simulation-only evaluation of response models against centralized scikit-learn.

Ridge R² and RMSE are measured on the scaled target (see ``SCALED_TARGET``), and every
model's predictions are clipped to the target's range as the published model clips them.

Each partner's design rows are rebuilt exactly as the partner builds them (same contract,
same seeded hold-out); the federated model and centralized models fitted on the pooled
training parts are scored on the pooled held-out parts. Nothing here is part of the
protocol: in deployment the held-out customers never leave their partner.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.metrics import log_loss, mean_squared_error, r2_score, roc_auc_score

from fedprofile.contract.design import DesignData
from fedprofile.contract.targets import TARGET_BOUND
from fedprofile.models.response_model import ResponseModel

__all__ = ["SCALED_TARGET", "bohning_logistic", "evaluate_response"]

SCALED_TARGET = ("on the scaled target: clipped to its declared bounds, transformed, mapped to "
                 "[-1/2, 1/2]; predictions clipped to that range")
"""How ridge metrics are measured (R² and RMSE are not in the target's original units)."""


def bohning_logistic(z: np.ndarray, y: np.ndarray, *, alpha: float, rounds: int) -> np.ndarray:
    """Centralized reference of the federated logistic steps (no noise, same iterations)."""
    penalty = np.diag(np.r_[np.ones(z.shape[1] - 1), 0.0])
    inverse = np.linalg.inv(z.T @ z / 4 + alpha * penalty)
    theta = np.zeros(z.shape[1])
    for _ in range(rounds):
        p = 1.0 / (1.0 + np.exp(-z @ theta))
        theta = theta - inverse @ (z.T @ (p - y) + alpha * penalty @ theta)
    return theta


def _deciles(score: np.ndarray, y: np.ndarray) -> list[dict[str, float]]:
    order = np.argsort(score)
    return [{"decile": i + 1, "predicted": float(score[idx].mean()),
             "observed": float(y[idx].mean()), "customers": len(idx)}
            for i, idx in enumerate(np.array_split(order, 10)) if len(idx)]


def evaluate_response(model: ResponseModel, designs: list[DesignData]) -> dict[str, Any]:
    """Test metrics of the federated model and of centralized models on the same rows."""
    z_tr = np.vstack([d.z_train for d in designs])
    y_tr = np.concatenate([d.y_train for d in designs])
    z_te = np.vstack([d.z_test for d in designs])
    y_te = np.concatenate([d.y_test for d in designs])
    alpha = float(model.params["alpha"])
    out: dict[str, Any] = {"n_train": len(z_tr), "n_test": len(z_te)}
    if model.task == "ridge":
        central = Ridge(alpha=alpha).fit(z_tr[:, :-1], y_tr)
        ols = LinearRegression().fit(z_tr[:, :-1], y_tr)
        # every prediction is clipped to the target's scaled range, as the published
        # model's are, so at epsilon = inf the federated and centralized rows are equal
        fed_pred = np.clip(z_te @ model.coef_, -TARGET_BOUND, TARGET_BOUND)
        c_pred = np.clip(central.predict(z_te[:, :-1]), -TARGET_BOUND, TARGET_BOUND)
        o_pred = np.clip(ols.predict(z_te[:, :-1]), -TARGET_BOUND, TARGET_BOUND)
        out["scale"] = SCALED_TARGET
        out["federated"] = _regression_metrics(y_te, fed_pred)
        out["centralized"] = _regression_metrics(y_te, c_pred)
        out["centralized_ols"] = _regression_metrics(y_te, o_pred)
        reference = np.r_[central.coef_, central.intercept_]
        out["deciles"] = _deciles(fed_pred, y_te)
    else:
        central = LogisticRegression(C=1.0 / max(alpha, 1e-12), max_iter=2000)
        central.fit(z_tr[:, :-1], y_tr)
        fed_p = 1.0 / (1.0 + np.exp(-(z_te @ model.coef_)))
        out["federated"] = _classification_metrics(y_te, fed_p)
        out["centralized"] = _classification_metrics(y_te, central.predict_proba(
            z_te[:, :-1])[:, 1])
        reference = bohning_logistic(z_tr, y_tr, alpha=alpha,
                                     rounds=int(model.params["gd_rounds"]))
        out["centralized_same_steps"] = _classification_metrics(
            y_te, 1.0 / (1.0 + np.exp(-(z_te @ reference))))
        out["deciles"] = _deciles(fed_p, y_te)
    out["coef_max_abs_diff_vs_centralized_same_steps"] = float(
        np.max(np.abs(model.coef_ - reference)))
    return out


def _regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"r2": float(r2_score(y, pred)), "rmse": float(np.sqrt(mean_squared_error(y, pred)))}


def _classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    if len(np.unique(y)) < 2:
        return {"auc": float("nan"), "log_loss": float("nan")}
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return {"auc": float(roc_auc_score(y, p)), "log_loss": float(log_loss(y, p))}


