"""The ``fedprofile`` command line (typer + rich)."""

from fedprofile.cli.commands import app, main

__all__ = ["app", "main"]
