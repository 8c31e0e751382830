"""Console, shared option values and error display of the ``fedprofile`` command line.

A user mistake (a :class:`~fedprofile.errors.FedprofileError`) prints its one-line message.
Any other error prints one line and the path of a log file holding the traceback: code
locations only, no local variables and no exception text that could quote a data value.
"""

from __future__ import annotations

import functools
import os
import tempfile
import traceback
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import typer
from rich.console import Console

from fedprofile.errors import FedprofileError

__all__ = ["LOG_DIR_ENV", "PRESET_NAMES", "CliApp", "console", "crash_log", "fail"]

console = Console()
err_console = Console(stderr=True)

PRESET_NAMES = ("bank", "retail", "retail-transactions", "retail-holdout", "hillstrom")

_Command = TypeVar("_Command", bound=Callable[..., Any])

LOG_DIR_ENV = "FEDPROFILE_LOG_DIR"
"""Environment variable naming the folder of error logs (default ``.fedprofile/logs``)."""


def fail(exc: Exception) -> typer.Exit:
    """Print a user mistake's message (no traceback, no markup) and exit with code 2."""
    err_console.print("[bold red]Error:[/]", end=" ")
    err_console.print(str(exc), markup=False, highlight=False)
    if isinstance(exc, FedprofileError) and exc.local_detail:
        err_console.print(f"Detail: {exc.local_detail}", markup=False, highlight=False)
    return typer.Exit(code=2)


def _log_folder() -> Path:
    wanted = Path(os.environ.get(LOG_DIR_ENV) or Path(".fedprofile") / "logs")
    for folder in (wanted, Path(tempfile.gettempdir()) / "fedprofile-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        except OSError:
            continue
    return Path(tempfile.gettempdir())


def _describe(exc: BaseException) -> list[str]:
    """Type and code locations of ``exc`` and its causes; messages only of fedprofile errors.

    The text of other exceptions (pandas, NumPy, Flower...) may quote a data value, so it
    is withheld; so are local variables.
    """
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)
        lines += ["Traceback (most recent call last):",
                  *(f'  File "{f.filename}", line {f.lineno}, in {f.name}\n    {f.line or ""}'
                    for f in frames)]
        text = (str(current) if isinstance(current, FedprofileError)
                else "(message withheld: it may quote data values)")
        lines.append(f"{type(current).__module__}.{type(current).__qualname__}: {text}")
        current = current.__cause__ or current.__context__
        if current is not None:
            lines.append("\nwhile handling, or caused by:")
    return lines


def crash_log(exc: BaseException, command: str) -> Path:
    """Write ``exc``'s traceback (no locals, no data) to a new log file; return its path."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = _log_folder() / f"fedprofile-error-{stamp}-{os.getpid()}.log"
    path.write_text("\n".join([f"fedprofile {command}: unexpected error", *_describe(exc)])
                    + "\n", encoding="utf-8")
    return path


def _guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command; an unexpected error prints one line and the path of its log."""
    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort,
                KeyboardInterrupt, SystemExit):
            raise
        except FedprofileError as exc:
            raise fail(exc) from None
        except Exception as exc:  # noqa: BLE001 - the one place that catches everything
            path = crash_log(exc, func.__name__)
            err_console.print(f"[bold red]Unexpected error[/] ({type(exc).__name__}) in "
                              f"fedprofile {func.__name__}; the traceback is in {path}",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None
    return run


class CliApp(typer.Typer):
    """A Typer app whose commands never print locals nor an unexpected error's text."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("pretty_exceptions_show_locals", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[_Command], _Command]:
        """Register a command wrapped by the unexpected-error guard."""
        register = super().command(*args, **kwargs)

        def decorator(func: _Command) -> _Command:
            register(_guarded(func))
            return func
        return decorator
