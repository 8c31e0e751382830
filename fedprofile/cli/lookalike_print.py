"""``fedprofile sim --task lookalike``: quality, each partner's selection and its ε."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.table import Table

from fedprofile.cli.common import console

__all__ = ["print_lookalike"]


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def print_lookalike(metrics: dict[str, Any], report: Path, state_dir: Path) -> None:
    """Print held-out quality against the centralized reference, and each partner's audience."""
    quality = metrics.get("lookalike") or {}
    if quality:
        table = Table(title="Lookalike quality: held-out seed membership (simulation only)")
        for col in ("model", "AUC", "top-decile lift"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for label, key in (("federated DP", "federated"),
                           ("centralized non-private", "centralized")):
            q = quality.get(key) or {}
            table.add_row(label, _num(q.get("auc")), _num(q.get("top_decile_lift"), 2))
        within = quality.get("within_seed_owner") or {}
        for label, key in (("federated DP, within the seed owner", "federated"),
                           ("centralized, within the seed owner", "centralized")):
            q = within.get(key) or {}
            if q:
                table.add_row(label, _num(q.get("auc")), _num(q.get("top_decile_lift"), 2))
        console.print(table)
        held = quality.get("held_out") or {}
        console.print(f"Held out: {held.get('seed')} seed customers, {held.get('others')} "
                      "others.", highlight=False)
    eps = (metrics.get("privacy") or {}).get("epsilon_per_partner") or {}
    table = Table(title="Audiences written at each partner (kept there, never sent)")
    for col in ("partner", "selected", "ε spent"):
        table.add_column(col, justify="left" if col == "partner" else "right")
    for name in metrics.get("partners") or []:
        count = (metrics.get("selected") or {}).get(name)
        table.add_row(name, "–" if count is None else f"{count:,}",
                      "∞ (not private)" if eps.get(name) is None else _num(eps[name], 4))
    console.print(table)
    console.print("Each partner's audience: "
                  f"{state_dir}/partners/*/outputs/lookalike-*.parquet", highlight=False)
    console.print(f"Report: [bold]{report}[/]", highlight=False)
