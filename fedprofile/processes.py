"""The process table from ``/proc``: descendants and resident memory of a process tree."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcessInfo", "descendants", "process_table", "tree_rss"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcessInfo:
    """One live process: parent, state letter and resident memory in bytes."""

    ppid: int
    state: str
    rss: int


def process_table() -> dict[int, ProcessInfo]:
    """Every process visible in ``/proc``."""
    table: dict[int, ProcessInfo] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()
                table[int(entry.name)] = ProcessInfo(ppid=int(fields[1]), state=fields[0],
                                                     rss=int(fields[21]) * _PAGE)
    return table


def descendants(roots: set[int], table: dict[int, ProcessInfo] | None = None) -> set[int]:
    """Live (non-zombie) descendants of ``roots``, not including the roots."""
    table = process_table() if table is None else table
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        frontier = {p for p, info in table.items() if info.ppid in frontier} - found
        found |= frontier
    return {p for p in found if table[p].state != "Z"}


def tree_rss(root: int) -> int:
    """Resident memory of ``root`` and all its descendants, in bytes."""
    table = process_table()
    return sum(table[p].rss for p in descendants({root}, table) | {root} if p in table)
