"""The overlap report: the N x N matrix of noisy overlaps, shares, suppressed cells and ε."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from fedprofile.server.report_html import CSS, esc, img, table
from fedprofile.server.report_plots import figure_to_base64

__all__ = ["overlap_matrix", "render_overlap_report", "write_overlap_outputs"]


def overlap_matrix(doc: Mapping[str, Any]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Partners, the symmetric matrix of noisy counts (NaN: not released) and the share.

    The share of row ``i``, column ``j`` is the noisy overlap over partner ``i``'s noisy
    customer count (both released; post-processing).
    """
    names = list(doc["partners"])
    idx = {n: i for i, n in enumerate(names)}
    counts = np.full((len(names), len(names)), np.nan)
    share = np.full_like(counts, np.nan)
    customers = doc.get("noisy_customers") or {}
    for cell in doc["pairs"]:
        a, b = (idx[n] for n in cell["partners"])
        if cell.get("count") is None:
            continue
        counts[a, b] = counts[b, a] = cell["count"]
        for i, j, name in ((a, b, names[a]), (b, a, names[b])):
            size = customers.get(name) or 0
            share[i, j] = min(cell["count"] / size, 1.0) if size > 0 else np.nan
    return names, counts, share


def _cell_label(cell: Mapping[str, Any]) -> str:
    if cell.get("refused"):
        return "refused"
    return "suppressed" if cell.get("suppressed") else str(cell.get("count"))


def _heatmap(names: list[str], values: np.ndarray, title: str, fmt: str) -> str | None:
    if not np.isfinite(values).any():
        return None
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.5, 1.0 * len(names) + 2))
    shown = np.ma.masked_invalid(values)
    im = ax.imshow(shown, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    for i in range(len(names)):
        for j in range(len(names)):
            text = "–" if i == j else ("supp." if not np.isfinite(values[i, j])
                                       else format(values[i, j], fmt))
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    return figure_to_base64(fig)


def render_overlap_report(doc: Mapping[str, Any], metrics: Mapping[str, Any],
                          out_path: Path) -> Path:
    """Write a self-contained HTML report of an overlap run."""
    names, counts, share = overlap_matrix(doc)
    priv = doc["privacy"]
    banner = ('<div class="warning">NOT PRIVATE: this run used ε = ∞ (no noise); for checks '
              "only.</div>" if priv.get("non_private") else "")
    truth = {tuple(t["partners"]): t.get("true") for t in metrics.get("true_overlap") or []}
    rows = [[f"{c['partners'][0]} – {c['partners'][1]}", _cell_label(c),
             truth.get(tuple(c["partners"])), c.get("min_overlap_size"),
             c.get("refused") or ""] for c in doc["pairs"]]
    eps_rows = [[n, e] for n, e in (priv.get("epsilon_per_partner") or {}).items()]
    summary = (f"Customers shared by each pair of {len(names)} partners, counted by private set "
               "intersection on keyed pseudonyms: no partner and not the coordinator learns "
               f"which customers are shared. Each count carries {priv.get('mechanism')} noise "
               f"(σ = {priv.get('sigma', 0):.3g}, sensitivity 1) and is charged to both "
               "partners; counts below the stricter partner's min_overlap_size are suppressed.")
    body = (f"<h1>Audience overlap</h1><p class='meta'>"
            f"{esc(datetime.now().strftime('%Y-%m-%d %H:%M'))}</p>{banner}"
            f"<p class='summary'>{esc(summary)}</p><section><h2>Overlap matrix</h2>"
            f"{img(_heatmap(names, counts, 'Noisy overlap (customers)', '.0f'), 'Overlap', 'no count released')}"  # noqa: E501
            f"{img(_heatmap(names, share, 'Overlap as share of the row partner', '.1%'), 'Share', 'no count released')}"  # noqa: E501
            "</section><section><h2>Pairs</h2>"
            + table(["pair", "noisy overlap", "true (simulation only)", "minimum", "refused"],
                    rows, digits=0)
            + "</section><section><h2>Privacy</h2>"
            + table(["partner", "ε spent in this run"], eps_rows)
            + f"<p>δ = {esc(priv.get('delta'))}; {esc(priv.get('accountant'))}.</p></section>")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>Audience "
                        f"overlap</title><style>{CSS}</style></head><body><main>{body}</main>"
                        "</body></html>", encoding="utf-8")
    return out_path


def write_overlap_outputs(doc: Mapping[str, Any], metrics: Mapping[str, Any],
                          out_dir: Path) -> None:
    """Write ``model.json``, ``metrics.json`` and ``report.html`` of an overlap run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1, default=str),
                                          encoding="utf-8")
    render_overlap_report(doc, metrics, out_dir / "report.html")
