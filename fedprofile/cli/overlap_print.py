"""``fedprofile sim --task overlap``: the overlap matrix and each count against the truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from fedprofile.cli.common import console

__all__ = ["print_overlap"]


def print_overlap(doc: dict[str, Any], metrics: dict[str, Any], report: Path) -> None:
    """Print the N x N matrix of noisy overlaps, the truth the simulation knows, and ε."""
    names = list(doc["partners"])
    cells = {tuple(c["partners"]): c for c in doc["pairs"]}
    matrix = Table(title="Noisy audience overlap (customers shared by each pair)")
    matrix.add_column("")
    for name in names:
        matrix.add_column(name, justify="right")
    for a in names:
        row = []
        for b in names:
            cell = cells.get((a, b)) or cells.get((b, a))
            row.append("–" if a == b or cell is None else "refused" if cell.get("refused")
                       else "suppressed" if cell.get("suppressed") else f"{cell['count']:,}")
        matrix.add_row(a, *row)
    console.print(matrix)
    truth = metrics.get("true_overlap") or []
    if truth:
        table = Table(title="Noisy vs true overlap (the truth is known in simulation only)")
        for col in ("pair", "noisy", "true", "error"):
            table.add_column(col, justify="left" if col == "pair" else "right")
        for t in truth:
            table.add_row(" – ".join(t["partners"]),
                          "suppressed" if t["noisy"] is None else f"{t['noisy']:,}",
                          f"{t['true']:,}", "" if t["error"] is None else f"{t['error']:+,}")
        console.print(table)
    for cell in doc["pairs"]:
        if cell.get("refused"):
            console.print("[bold yellow]Refused:[/] ", end="")
            console.print(f"{' – '.join(cell['partners'])}: {cell['refused']}",
                          markup=False, highlight=False)
    priv = doc["privacy"]
    spent = ", ".join(f"{n} {e:.3f}" if e is not None else f"{n} inf"
                      for n, e in (priv.get("epsilon_per_partner") or {}).items())
    head = ("NOT PRIVATE (epsilon = inf)" if priv.get("non_private") else
            f"epsilon = {priv['epsilon_per_count']:g} per count (sigma = {priv['sigma']:.2f}),"
            f" delta = {priv['delta']:g}")
    console.print(f"Privacy: {head}. Spent per partner: {spent}.", highlight=False)
    console.print(f"Wall time {metrics['wall_time_s']:.1f} s. Report: [bold]{report}[/]",
                  highlight=False)
