"""A static, self-contained HTML report of a segmentation run.

The report speaks plain words first (summary, segments, plots) and engineering
details after (quality vs centralized, privacy ledger, run parameters). Plots are
embedded as base64 PNG, the CSS is inline, there is no JavaScript and no external
URL. Every string taken from the model or the metrics is HTML-escaped; suppressed
segments are listed without any profile value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from fedprofile.server import report_plots
from fedprofile.server.report_choices import k_choice_section, refresh_section
from fedprofile.server.report_html import (
    CSS,
    data_quality_section,
    esc,
    fmt,
    fmt_sci,
    get,
    img,
    ledger_section,
    mapping,
    num,
    table,
    warnings_block,
)

__all__ = ["render_report"]


def _is_non_private(model: Mapping[str, Any], metrics: Mapping[str, Any]) -> bool:
    """True if either file flags the run as non-private or its ε is infinite."""
    if get(model, "privacy", "non_private") or get(metrics, "privacy", "non_private"):
        return True
    eps = num(get(model, "privacy", "epsilon_spent"))
    return eps is not None and math.isinf(eps)


def _segments(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Normalise the per-segment data of the model (profiles, sizes, suppression)."""
    profiles = [p for p in model.get("profiles") or [] if isinstance(p, Mapping)]
    sizes = list(model.get("sizes_noisy") or [])
    flags = list(model.get("suppressed") or [])
    n = max(len(profiles), len(sizes), len(flags))
    known = [num(s) or 0.0 for s in sizes]
    total = sum(max(s, 0.0) for s in known)
    out = []
    for i in range(n):
        prof = profiles[i] if i < len(profiles) else {}
        size = num(prof.get("size", sizes[i] if i < len(sizes) else None))
        share = num(prof.get("share"))
        if share is None and size is not None and total > 0:
            share = max(size, 0.0) / total
        sup = bool(prof.get("suppressed")) or (i < len(flags) and bool(flags[i]))
        out.append({"id": prof.get("segment", i), "size": size, "share": share,
                    "suppressed": sup, "numeric": mapping(prof.get("numeric")),
                    "categorical": mapping(prof.get("categorical")),
                    "tags": list(prof.get("tags") or [])})
    return out


def _header(model: Mapping[str, Any], metrics: Mapping[str, Any], segs: list[dict]) -> str:
    """Title, date, the non-private warning and the plain-language summary."""
    fed = model.get("federation") or "unnamed federation"
    created = str(model.get("created_at") or "")
    try:
        date = datetime.fromisoformat(created).strftime("%d %B %Y")
    except ValueError:
        date = created or "unknown date"
    published = sum(not s["suppressed"] for s in segs)
    n_sup = len(segs) - published
    partners = model.get("partners") or []
    n_partners = len(partners) or metrics.get("n_partners") or "several"
    seg_words = "segments were" if published != 1 else "segment was"
    text = (f"{published} audience {seg_words} learned from {esc(n_partners)} "
            f"partner{'' if n_partners == 1 else 's'}' customers; "
            "no customer record left any partner")
    if n_sup:
        were, are = ("s were", "are") if n_sup != 1 else (" was", "is")
        text += f"; {n_sup} further segment{were} too small to publish and {are} not described"
    warning = ""
    if _is_non_private(model, metrics):
        warning = ('<div class="warning">NOT PRIVATE: this run used ε = ∞ (no noise); '
                   "for checks only.</div>")
        text += ("; no noise was added, so these results carry no differential-privacy "
                 "protection and must not be shared.")
    else:
        priv = model.get("privacy") or {}
        eps = priv.get("epsilon_spent", priv.get("epsilon_target"))
        eps_text = f"{num(eps):.2f}" if num(eps) is not None else "unknown"
        delta = num(priv.get("delta"))
        text += (f"; privacy guarantee ε={eps_text}, δ={fmt_sci(delta) if delta else '0'}"
                 " (the results would look almost the same had any single customer "
                 "stayed out).")
    return (f"<header><h1>Audience segments: {esc(fed)}</h1>"
            f'<p class="meta">Report of the run of {esc(date)}</p>{warning}'
            f'<p class="summary">{text}</p></header>')


def _top_categories(cats: Mapping[str, Any], top: int = 3) -> list[str]:
    """One 'feature: cat 60 %, …' line per categorical feature."""
    lines = []
    for feat, shares in cats.items():
        if not isinstance(shares, Mapping):
            continue
        ranked = sorted(((c, num(v) or 0.0) for c, v in shares.items()), key=lambda t: -t[1])
        parts = ", ".join(f"{esc(c)} {100 * v:.0f} %" for c, v in ranked[:top])
        lines.append(f"<li><b>{esc(feat)}</b>: {parts}</li>")
    return lines


def _segments_section(model: Mapping[str, Any], segs: list[dict]) -> str:
    """Cards of the published segments and the list of suppressed ones."""
    cards = []
    for s in segs:
        if s["suppressed"]:
            continue
        tags = "".join(f'<span class="tag">{esc(t)}</span>' for t in s["tags"]) or (
            '<span class="na">no tags</span>')
        size = "size unknown" if s["size"] is None else f"≈ {max(s['size'], 0):,.0f} customers"
        share = "" if s["share"] is None else f" ({100 * s['share']:.1f} % of customers)"
        nums = [f"<li><b>{esc(k)}</b>: average {fmt(v)}</li>" for k, v in s["numeric"].items()]
        items = "".join(nums + _top_categories(s["categorical"]))
        cards.append(f'<div class="card"><h3>Segment {esc(s["id"])}</h3><div>{tags}</div>'
                     f'<p><span class="size">{size}</span>{share}</p><ul>{items}</ul></div>')
    body = f'<div class="cards">{"".join(cards)}</div>' if cards else (
        '<p class="na">No segment was large enough to publish.</p>')
    sup = [s for s in segs if s["suppressed"]]
    if sup:
        n_min = fmt(model.get("min_segment_size"), 0) if model.get("min_segment_size") else "N"
        rows = "".join(f"<li>Segment {esc(s['id'])}: suppressed (fewer than {n_min} customers)"
                       "</li>" for s in sup)
        body += ('<h3>Suppressed segments</h3><p class="suppressed">These segments are too '
                 "small to describe without risk; their profiles are not shown.</p>"
                 f"<ul>{rows}</ul>")
    return f"<section><h2>The segments</h2>{body}</section>"


def _heatmap_data(model: Mapping[str, Any], segs: list[dict]) -> tuple[list, list, list]:
    """Rows, columns and values of the profile heatmap (published segments only)."""
    names = [str(n) for n in model.get("feature_names") or []]
    centers = model.get("centers_scaled") or []
    spec = get(model, "spec", "features") or {}
    numeric = [f for f in names
               if get(spec, f, "kind") == "numeric" or (not spec and "=" not in f)]
    if spec:
        cat_feats = [f for f, d in spec.items() if get(d, "kind") == "categorical"]
    else:
        cat_feats = sorted({n.split("=", 1)[0] for n in names if "=" in n})
    pub = [s for s in segs if not s["suppressed"]]
    cols: list[tuple[str, Any]] = [(f"{f} (scaled)", ("num", names.index(f))) for f in numeric]
    for feat in cat_feats:
        best: dict[str, float] = {}
        for s in pub:
            for cat, v in (get(s["categorical"], str(feat)) or {}).items():
                best[cat] = max(best.get(cat, 0.0), num(v) or 0.0)
        for cat in sorted(best, key=lambda c: -best[c])[:3]:
            cols.append((f"{feat}={cat} (share)", ("cat", feat, cat)))
    rows, values = [], []
    for s in pub:
        idx = s["id"] if isinstance(s["id"], int) else None
        centre = centers[idx] if idx is not None and 0 <= idx < len(centers) else None
        row = []
        for _, key in cols:
            if key[0] == "num":
                row.append(num(centre[key[1]]) if centre and key[1] < len(centre) else None)
            else:
                row.append(num(get(s["categorical"], str(key[1]), str(key[2]))))
        values.append([math.nan if v is None else v for v in row])
        rows.append(f"Segment {s['id']}: " + ", ".join(str(t) for t in s["tags"][:2]))
    return rows, [c for c, _ in cols], values


def _plots_section(model: Mapping[str, Any], metrics: Mapping[str, Any], segs: list[dict]) -> str:
    """The four plots: sizes, profile heatmap, cost per round, privacy spend."""
    parts = []
    sizes = [None if s["suppressed"] else s["size"] for s in segs]
    parts.append(img(report_plots.plot_segment_sizes(
        [s["id"] for s in segs], sizes, num(model.get("min_segment_size"))),
        "Segment sizes", "no segments"))
    parts.append(img(report_plots.plot_profile_heatmap(*_heatmap_data(model, segs)),
                      "Segment profiles", "no published profile to show"))
    per_round = [(r, cost) for r in get(metrics, "kmeans", "cost_per_round") or []
                 if isinstance(r, Mapping) and (cost := num(r.get("cost"))) is not None]
    rounds = [num(r.get("round", i)) for i, (r, _) in enumerate(per_round)]
    parts.append(img(report_plots.plot_cost_per_round(
        [math.nan if x is None else x for x in rounds],  # matplotlib draws None as NaN: a gap
        [cost for _, cost in per_round],
        num(get(metrics, "kmeans", "cost_centralized"))),
        "k-means cost per round", "not recorded for this run"))
    rel = [r for r in get(model, "privacy", "releases") or [] if isinstance(r, Mapping)]
    parts.append(img(report_plots.plot_privacy_spend(
        [f"{r.get('stage', '?')} r{r.get('round', '?')} {r.get('component', '')}" for r in rel],
        [num(r.get("mu")) for r in rel], [num(r.get("epsilon_cumulative")) for r in rel],
        num(get(model, "privacy", "epsilon_target"))),
        "Privacy spend per release", "no finite privacy loss was recorded"))
    return "<section><h2>Charts</h2>" + "".join(parts) + "</section>"


def _ari_words(ari: float) -> str:
    """Plain reading of an adjusted Rand index."""
    if ari >= 0.9:
        return "the two segmentations put almost every customer in the same group"
    if ari >= 0.7:
        return "the two segmentations largely agree"
    if ari >= 0.4:
        return "the two segmentations partly agree"
    return "the two segmentations differ substantially"


def _quality_section(metrics: Mapping[str, Any]) -> str:
    """Cost ratio and ARI against a centralized k-means, explained in words."""
    km = mapping(metrics.get("kmeans"))
    fed, cen = num(km.get("cost_federated")), num(km.get("cost_centralized"))
    ratio = num(km.get("cost_ratio"))
    if ratio is None and fed is not None and cen:
        ratio = fed / cen
    ari = num(km.get("ari"))
    words = []
    if ratio is not None and math.isfinite(ratio):
        gap = 100 * abs(ratio - 1)
        where = "within" if ratio >= 1 else "below"
        words.append(f"The federated segments are {where} {gap:.1f} % of the cost of a "
                     "non-private k-means on the pooled data.")
    if ari is not None:
        words.append(f"Adjusted Rand index {ari:.2f}: {_ari_words(ari)}.")
    if not words:
        words.append("Comparison with a centralized k-means: not available in deployment "
                     "(the pooled data does not exist outside a simulation).")
    rows = [(k, v) for k, v in (("cost federated", fed), ("cost centralized", cen),
            ("cost centralized (mean of restarts)", km.get("cost_centralized_mean")),
            ("cost ratio", ratio), ("ARI", ari), ("partners", metrics.get("n_partners")),
            ("customers", metrics.get("n_customers")), ("rounds", metrics.get("rounds")),
            ("wall time (s)", metrics.get("wall_time_s")),
            ("evaluation", metrics.get("evaluation"))) if v is not None]
    facts = table(["quantity", "value"], rows) if rows else ""
    return ("<section><h2>Quality compared with a centralized k-means</h2>"
            f"<p>{' '.join(esc(w) for w in words)}</p>{facts}</section>")


def _params_section(model: Mapping[str, Any]) -> str:
    """Run parameters, the feature contract and the partners."""
    params = model.get("params") or {}
    prows = [(k, v if isinstance(v, (int, float, str)) else str(v)) for k, v in params.items()]
    frows = []
    for name, d in (get(model, "spec", "features") or {}).items():
        d = d if isinstance(d, Mapping) else {}
        if d.get("kind") == "categorical":
            detail = ", ".join(str(c) for c in d.get("categories") or [])
            detail += " (+ other)" if d.get("other") else ""
        else:
            bounds = d.get("bounds") or []
            detail = " to ".join(fmt(b) for b in bounds) if bounds else "–"
        frows.append((name, d.get("kind", "–"), detail))
    partners = "".join(f"<li>{esc(p)}</li>" for p in model.get("partners") or [])
    return ("<section><h2>Run parameters</h2>"
            + (table(["parameter", "value"], prows) if prows else "")
            + (table(["feature", "kind", "bounds / categories"], frows) if frows else "")
            + (f"<h3>Partners</h3><ul>{partners}</ul>" if partners else "") + "</section>")


def render_report(model: Mapping[str, Any], metrics: Mapping[str, Any], out_path: Path) -> Path:
    """Write a self-contained HTML report of a segmentation run.

    Parameters
    ----------
    model : Mapping
        The segment model (content of ``model.json``).
    metrics : Mapping
        Run metrics (content of ``metrics.json``); optional keys may be missing.
    out_path : Path
        Where to write the HTML file (parent folders are created).

    Returns
    -------
    Path
        ``out_path``.
    """
    model = model or {}
    metrics = metrics or {}
    segs = _segments(model)
    non_private = _is_non_private(model, metrics)
    title = esc(f"Audience segments: {model.get('federation') or 'report'}")
    doc = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body><main>"
        + _header(model, metrics, segs) + warnings_block(metrics)
        + _segments_section(model, segs) + refresh_section(model)
        + _plots_section(model, metrics, segs) + k_choice_section(model)
        + '<h2 class="part">Details for analysts and engineers</h2>'
        + _quality_section(metrics) + data_quality_section(metrics)
        + ledger_section(model, non_private)
        + _params_section(model) + "</main></body></html>\n"
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out
