"""Console, shared option values and error display of the ``fedprofile`` command line."""

from __future__ import annotations

import typer
from rich.console import Console

__all__ = ["PRESET_NAMES", "console", "fail"]

console = Console()
err_console = Console(stderr=True)

PRESET_NAMES = ("bank", "retail", "retail-transactions", "retail-holdout", "hillstrom")


def fail(exc: Exception) -> typer.Exit:
    """Print a user mistake's message (no traceback, no markup) and exit with code 2."""
    err_console.print("[bold red]Error:[/]", end=" ")
    err_console.print(str(exc), markup=False, highlight=False)
    return typer.Exit(code=2)
