"""The HTML report of a response model: quality, coefficients, deciles and privacy."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedprofile.models.response_model import ResponseModel
from fedprofile.server.report_html import (
    CSS,
    data_quality_section,
    esc,
    fmt,
    img,
    ledger_section,
    num,
    table,
    warnings_block,
)
from fedprofile.server.report_plots import figure_to_base64, plt

__all__ = ["render_response_report"]

_BLUE, _GREY = "#2f6db5", "#b8b8b8"


def _coef_plot(names: Sequence[str], values: Sequence[float]) -> str | None:
    if not names:
        return None
    order = np.argsort(np.abs(values))[::-1][:25][::-1]
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(order) + 1.2))
    ax.barh([names[i] for i in order], [values[i] for i in order],
            color=[_BLUE if values[i] >= 0 else "#c0392b" for i in order])
    ax.set_xlabel("coefficient (scaled features)")
    ax.set_title("Largest effects")
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_base64(fig)


def _decile_plot(deciles: Sequence[Mapping[str, Any]], task: str) -> str | None:
    if not deciles:
        return None
    pred = [num(d.get("predicted")) or 0.0 for d in deciles]
    obs = [num(d.get("observed")) or 0.0 for d in deciles]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = np.arange(1, len(deciles) + 1)
    ax.plot(x, pred, marker="o", color=_GREY, label="predicted (mean)")
    ax.plot(x, obs, marker="o", color=_BLUE, label="observed (mean)")
    ax.set_xlabel("score decile (1 = lowest predicted)")
    ax.set_ylabel("conversion rate" if task == "logistic" else "target (scaled)")
    ax.set_title("Calibration by decile" if task == "logistic" else "Lift by decile")
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return figure_to_base64(fig)


def _quality(model: ResponseModel, metrics: Mapping[str, Any]) -> str:
    resp = metrics.get("response") or {}
    if not resp:
        return ("<section><h2>Quality</h2><p class='na'>Not available in deployment: test "
                "metrics stay at each partner.</p></section>")
    keys = (("r2", "R² (on the scaled target)"), ("rmse", "RMSE (on the scaled target)")
            ) if model.task == "ridge" else (
        ("auc", "AUC"), ("log_loss", "log-loss"))
    rows = [[label, resp.get("federated", {}).get(k), resp.get("centralized", {}).get(k)]
            for k, label in keys]
    words = (f"On the partners' held-out customers ({resp.get('n_test', '?')} in all) the "
             "federated model is compared with the same model trained centrally on the "
             "pooled training customers.")
    if model.task == "ridge":
        words += (" R² and RMSE are measured on the scaled target (clipped to its declared "
                  "bounds, transformed and mapped to [-1/2, 1/2]), not in its original "
                  "units.")
    return (f"<section><h2>Quality</h2><p>{esc(words)}</p>"
            f"{table(['metric', 'federated (private)', 'centralized (not private)'], rows)}"
            "</section>")


def render_response_report(model: ResponseModel, metrics: Mapping[str, Any],
                           out_path: Path) -> Path:
    """Write a self-contained HTML report of a response model."""
    doc = model.to_dict()
    priv = doc["privacy"]
    non_private = bool(priv.get("non_private"))
    what = ("predicts the value " if model.task == "ridge" else
            "scores the propensity ") + f"'{model.target}'"
    guarantee = ("" if non_private else
                 f" Privacy guarantee: ε = {fmt(priv.get('epsilon_spent'), 2)}, "
                 f"δ = {fmt(priv.get('delta'), 8)} per partner's customer.")
    summary = (f"A {model.task} model that {what} was trained on {len(model.partners)} "
               f"partners' customers; no customer record left any partner.{guarantee}")
    banner = ('<div class="warning">NOT PRIVATE: this run used ε = ∞ (no noise); for checks '
              "only.</div>" if non_private else "")
    coefs = model.coefficients()
    coef_rows = [[c["name"] if c.get("supported", True) else f"{c['name']} (no customer)",
                  c["scaled"], c.get("per_unit")] for c in coefs]
    deciles = (metrics.get("response") or {}).get("deciles") or []
    shown = [c for c in coefs if c.get("supported", True) and c["name"] != "intercept"]
    coef_img = img(_coef_plot([c["name"] for c in shown], [c["scaled"] for c in shown]),
                   "Coefficients", "no coefficients")
    hidden = [c["name"] for c in coefs if not c.get("supported", True)]
    unsupported_note = (
        f"<p class='na'>Not charted: {esc(', '.join(hidden))}. No customer holds these "
        "categories (their noisy count is within two noise standard deviations of zero), "
        "so their coefficients are noise, not drivers.</p>" if hidden else "")
    body = (f"<h1>{esc(model.spec.name)}: {esc(model.task)} model for {esc(model.target)}</h1>"
            f"<p class='meta'>{esc(datetime.now().strftime('%Y-%m-%d %H:%M'))}</p>{banner}"
            f"<p class='summary'>{esc(summary)}</p>{warnings_block(metrics)}"
            f"{_quality(model, metrics)}{data_quality_section(metrics)}"
            "<section><h2>Charts</h2>"
            f"{img(_decile_plot(deciles, model.task), 'Deciles', 'simulation only')}"
            f"{coef_img}{unsupported_note}</section>"
            "<section><h2>Coefficients</h2>"
            f"{table(['feature', 'coefficient (scaled)', 'per original unit'], coef_rows)}"
            f"</section>{ledger_section(doc, non_private)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                        f"{esc(model.spec.name)} {esc(model.task)}</title><style>{CSS}</style>"
                        f"</head><body><main>{body}</main></body></html>", encoding="utf-8")
    return out_path
