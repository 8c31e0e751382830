"""What every published model shares: it is saved and loaded as a checked JSON document."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from fedprofile.io.tables import read_document, write_document

__all__ = ["ModelDocument"]


class ModelDocument:
    """Save and load through :meth:`to_dict` and :meth:`from_dict`, which a model defines."""

    def to_dict(self) -> dict[str, Any]:
        """The model as a JSON-compatible document."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, source: str = "<model>") -> Self:
        """Rebuild a model from its document, checking its format and version."""
        raise NotImplementedError

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON."""
        return write_document(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a model written by :meth:`save`, checking its format and version."""
        return cls.from_dict(read_document(path), source=str(path))
