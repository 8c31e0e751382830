"""Report sections of how a segmentation run started: ``--k auto`` and ``--start-from``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedprofile.server import report_plots
from fedprofile.server.report_html import esc, fmt, img, mapping, num, table

__all__ = ["k_choice_section", "refresh_section"]


def k_choice_section(model: Mapping[str, Any]) -> str:
    """The curve ``--k auto`` chose from, or nothing for a fixed k."""
    choice = mapping(mapping(model.get("params")).get("k_auto"))
    curve = [row for row in choice.get("curve") or [] if isinstance(row, Mapping)]
    if not curve:
        return ""
    chosen = int(num(mapping(model.get("params")).get("k")) or 0)
    plot = img(report_plots.plot_k_curve([int(r["k"]) for r in curve],
                                         [float(r["silhouette"]) for r in curve],
                                         [bool(r["feasible"]) for r in curve], chosen),
               "Choosing k", "no curve recorded")
    rows = [(r["k"], fmt(r["silhouette"], 3), fmt(r["smallest_segment"], 0),
             "yes" if r["feasible"] else "no", "◀" if r["k"] == chosen else "") for r in curve]
    return ("<section><h2>How many segments</h2>"
            f"<p>k = {chosen} was chosen in {esc(choice.get('range'))} by the "
            f"{esc(choice.get('criterion'))}.</p>{plot}"
            + table(["k", "silhouette", "smallest segment (noisy)", "publishable", "chosen"],
                    rows) + "</section>")


def refresh_section(model: Mapping[str, Any]) -> str:
    """What moved since the published model a refresh started from."""
    start = mapping(mapping(model.get("params")).get("start_from"))
    if not start:
        return ""
    old, new = start.get("previous_sizes") or [], start.get("sizes") or []
    shift = start.get("center_shift_scaled") or []
    rows = []
    for j, (before, after, moved) in enumerate(zip(old, new, shift, strict=False)):
        change = "" if not before else f"{100 * (after - before) / before:+.1f} %"
        rows.append((j, fmt(before, 0), fmt(after, 0), change, fmt(moved, 3)))
    return ("<section><h2>What moved since the last model</h2>"
            f"<p>This run refreshed the segments of run {esc(start.get('source') or '?')}: "
            "its published centres started the Lloyd rounds, so the whole budget went to the "
            "rounds. Sizes are noisy counts; the shift is in the contract's scaled space.</p>"
            + table(["segment", "previous size", "size now", "change", "centre shift"], rows)
            + "</section>")
