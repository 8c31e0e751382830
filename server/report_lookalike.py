"""The lookalike report: seed-membership quality, each partner's selection and its ε."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fedprofile.io.tables import json_safe
from fedprofile.models.lookalike_model import LookalikeModel
from fedprofile.server.report_html import (
    CSS,
    data_quality_section,
    esc,
    ledger_section,
    table,
    warnings_block,
)

__all__ = ["render_lookalike_report", "write_lookalike_outputs"]


def _quality(metrics: Mapping[str, Any]) -> str:
    ev = metrics.get("lookalike") or {}
    if not ev:
        return ("<section><h2>Quality</h2><p class='na'>Held-out quality is measured in "
                "simulation only: in a federation no one holds every customer's seed "
                "membership.</p></section>")
    rows = [[name, (ev.get(key) or {}).get("auc"), (ev.get(key) or {}).get("top_decile_lift")]
            for name, key in (("federated DP lookalike", "federated"),
                              ("centralized non-private logistic (reference)", "centralized"))]
    within = ev.get("within_seed_owner") or {}
    rows += [[f"{name}, within the seed owner's customers", (within.get(key) or {}).get("auc"),
              (within.get(key) or {}).get("top_decile_lift")]
             for name, key in (("federated", "federated"), ("centralized", "centralized"))
             if within]
    held = ev.get("held_out") or {}
    note = (f"<p>Held out from training: {held.get('seed', '–')} seed customers and "
            f"{held.get('others', '–')} other customers (the same seeded share at every "
            "partner). Lift: the seed's share among the top-scored 10 % of held-out "
            "customers over its share among all of them (1 = random).</p>")
    return ("<section><h2>Quality (held-out seed membership)</h2>"
            f"{table(['model', 'AUC', 'top-decile lift'], rows)}{note}</section>")


def _selection(model: LookalikeModel, metrics: Mapping[str, Any]) -> str:
    eps = (model.privacy.get("epsilon_per_partner") or {})
    selected = metrics.get("selected") or {}
    rows = [[name, selected.get(name, "not reported"),
             "∞ (not private)" if eps.get(name) is None else eps.get(name)]
            for name in model.partners]
    size, threshold = model.params.get("lookalike_size"), model.params.get("lookalike_threshold")
    rule = " and ".join(x for x in (f"the top {size}" if size else "",
                                    f"score ≥ {threshold:g}" if threshold else "") if x)
    return ("<section><h2>Audiences selected at each partner</h2>"
            f"<p>Each partner scored its own customers and kept {esc(rule)} (seed customers "
            "excluded at the seed owner), written to its own output folder as pseudonymised "
            "ids (row positions under a contract without identity); nothing was sent back. "
            "Counts are read from the partners' files in "
            "simulation only.</p>"
            f"{table(['partner', 'customers selected', 'ε spent'], rows)}</section>")


def render_lookalike_report(model: LookalikeModel, metrics: Mapping[str, Any],
                            out_path: Path) -> Path:
    """Write a self-contained HTML report of a lookalike run."""
    doc = model.to_dict()
    non_private = bool(doc["privacy"].get("non_private"))
    banner = ('<div class="warning">NOT PRIVATE: this run used ε = ∞ (no noise); for checks '
              "only.</div>" if non_private else "")
    summary = (f"A lookalike model of the seed audience ({model.seed.describe()}) against "
               f"every other customer of {len(model.partners)} partners, fitted by federated "
               "DP logistic regression; no customer record and no seed member left any "
               "partner.")
    coef_rows = [[c["name"], c["scaled"]] for c in doc["coefficients"]]
    body = (f"<h1>{esc(model.spec.name)}: lookalike audiences</h1>"
            f"<p class='meta'>{esc(datetime.now().strftime('%Y-%m-%d %H:%M'))}</p>{banner}"
            f"<p class='summary'>{esc(summary)}</p>{warnings_block(metrics)}"
            f"{_quality(metrics)}{_selection(model, metrics)}{data_quality_section(metrics)}"
            "<section><h2>Coefficients</h2>"
            f"{table(['feature', 'coefficient (scaled)'], coef_rows)}</section>"
            f"{ledger_section(doc, non_private)}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                        f"{esc(model.spec.name)} lookalike</title><style>{CSS}</style>"
                        f"</head><body><main>{body}</main></body></html>", encoding="utf-8")
    return out_path


def write_lookalike_outputs(model: LookalikeModel, metrics: Mapping[str, Any],
                            out_dir: Path) -> None:
    """Write ``model.json``, ``metrics.json`` and ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.json")
    (out_dir / "metrics.json").write_text(json.dumps(json_safe(dict(metrics)), indent=1,
                                                     default=str), encoding="utf-8")
    render_lookalike_report(model, metrics, out_dir / "report.html")
