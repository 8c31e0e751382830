"""HTML building blocks shared by the segmentation and response-model reports."""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["CSS", "data_quality_section", "esc", "fmt", "get", "img", "ledger_section",
           "mapping", "num", "table", "warnings_block"]


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:0;
background:#f5f6f8;color:#222;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px}h2{margin-top:36px;border-bottom:2px solid #dde;padding-bottom:4px}
.meta{color:#666}.part{margin-top:56px;color:#1d4e89;border-bottom:4px solid #1d4e89}
.summary{font-size:1.1em;background:#fff;padding:16px;border-radius:8px}
.warning{background:#c0392b;color:#fff;font-weight:bold;font-size:1.2em;padding:14px;
border-radius:8px;margin:16px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:14px}
.card{background:#fff;border-radius:8px;padding:14px;box-shadow:0 1px 3px rgba(0,0,0,.12)}
.card h3{margin:0 0 6px}.size{font-size:1.3em;font-weight:bold;color:#2f6db5}
.tag{display:inline-block;background:#e8f0fb;color:#1d4e89;border-radius:10px;
padding:1px 9px;margin:2px;font-size:.9em}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:.92em}
th,td{border:1px solid #dde;padding:4px 8px;text-align:left}th{background:#eef1f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.suppressed{color:#666;font-style:italic}.na{color:#888;font-style:italic}
.caution{background:#fff4d6;border-left:5px solid #e0a800;padding:10px 14px;margin:12px 0}
img{max-width:100%;background:#fff;border-radius:6px;margin:8px 0}
"""


def esc(value: Any) -> str:
    """Escape any value for HTML."""
    return html.escape(str(value))


def num(value: Any) -> float | None:
    """Return ``value`` as a float, or ``None`` if it is not a number."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def fmt(value: Any, digits: int = 2) -> str:
    """Format a number readably (∞ for infinity, – for missing)."""
    x = num(value)
    if x is None or math.isnan(x):
        return "–" if value is None else esc(value)
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 1e9):
        return fmt_sci(x)
    if abs(x) >= 1000 or (isinstance(value, int) and not isinstance(value, bool)):
        return f"{x:,.0f}"
    text = f"{x:.{digits}f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return "0" if text == "-0" else text


def fmt_sci(x: float) -> str:
    """Compact scientific notation: 1e-06 becomes 1e-6."""
    s = f"{x:.2g}"
    return re.sub(r"e([+-])0*(\d)", lambda m: "e" + ("-" if m[1] == "-" else "") + m[2], s)


def get(mapping: Any, *keys: str) -> Any:
    """Nested ``get`` that tolerates missing keys and non-mapping values."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty dict."""
    return value if isinstance(value, Mapping) else {}


def img(b64: str | None, alt: str, missing: str) -> str:
    """An embedded PNG, or a short note when the plot is not available."""
    if b64 is None:
        return f'<p class="na">{esc(alt)}: {esc(missing)}.</p>'
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{b64}">'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 4) -> str:
    """An HTML table; cells are escaped, numbers right-aligned and formatted."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{fmt(c, digits)}</td>' if num(c) is not None
                         else f"<td>{esc('–' if c is None else c)}</td>" for c in row) + "</tr>"
        for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def ledger_section(model: Mapping[str, Any], non_private: bool) -> str:
    """The privacy ledger: one row per noisy release."""
    priv = model.get("privacy") or {}
    facts = [(k, priv.get(key)) for k, key in (
        ("accountant", "accountant"), ("unit of privacy", "unit"),
        ("noise added at", "noise_placement"), ("ε target", "epsilon_target"),
        ("ε spent", "epsilon_spent"), ("δ", "delta"), ("μ (total)", "mu"))
        if priv.get(key) is not None]
    rel = [r for r in priv.get("releases") or [] if isinstance(r, Mapping)]
    cols = ("stage", "round", "component", "mechanism", "sensitivity", "sigma",
            "noise_multiplier", "epsilon_cumulative")
    ledger = table(["stage", "round", "component", "mechanism", "sensitivity", "σ",
                     "noise multiplier", "cumulative ε"],
                    [[r.get(c) for c in cols] for r in rel]) if rel else (
        '<p class="na">No noisy release was recorded.</p>')
    note = "<p>No noise was added in this run; the ledger is for checks only.</p>" \
        if non_private else ""
    return (f"<section><h2>Privacy ledger</h2>{note}{table(['item', 'value'], facts)}"
            f"{ledger}</section>")


def warnings_block(metrics: Mapping[str, Any]) -> str:
    """The run's warnings (data quality over 5 %, suppressed segments), or nothing."""
    items = [w for w in metrics.get("warnings") or [] if isinstance(w, str)]
    if not items:
        return ""
    return ('<div class="caution"><b>Warnings</b><ul>'
            + "".join(f"<li>{esc(w)}</li>" for w in items) + "</ul></div>")


def data_quality_section(metrics: Mapping[str, Any]) -> str:
    """Per-partner counts of dropped, missing, unparseable, clipped and (other) values."""
    quality = metrics.get("data_quality")
    if not isinstance(quality, Mapping) or not quality:
        return ""
    keys = ("rows", "customers", "dropped", "missing", "unparseable", "clipped",
            "other_category")
    rows = [[name, *(q.get(k) for k in keys)] for name, q in quality.items()
            if isinstance(q, Mapping)]
    return ("<section><h2>Data quality at each partner</h2><p>How each partner's table met "
            "the contract: customers dropped for a missing value the contract drops, values "
            "missing (dropped or imputed), unparseable, clipped into the declared bounds, and "
            "categories outside the declared ones (counted as (other)). Simulation only: in a "
            "deployment these exact counts stay at each partner.</p>"
            + table(["partner", "rows", "customers", "dropped", "missing", "unparseable",
                     "clipped", "(other)"], rows, digits=0) + "</section>")
