"""The files that ship inside the package: feature contracts and the bundled data sets.

They are found through :mod:`importlib.resources`, so they are the same in a source
checkout, an editable install and an installed wheel, whatever the working directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["CONTRACTS", "DATA", "contract_path", "packaged_dir"]

CONTRACTS = "specs"
"""Folder of the shipped feature contracts (``bank.toml``, ``hillstrom.toml``…)."""
DATA = "data"
"""Folder of the bundled public data sets (see its ``README.md``)."""


def packaged_dir(name: str) -> Path:
    """A folder shipped inside the ``fedprofile`` package, as a file-system path.

    The package must be installed as files on disk (a wheel installed by pip, an editable
    install or a checkout), where the resource already is a path that stays valid. A package
    imported from a zip archive has no such path (:func:`importlib.resources.as_file` would
    extract a temporary copy that is deleted when its context exits), so this refuses it
    rather than returning a path that no longer exists.

    Raises
    ------
    RuntimeError
        If the package is not installed as files on disk.
    """
    resource = files("fedprofile") / name
    if not isinstance(resource, Path):
        raise RuntimeError(f"The packaged folder {name!r} is not a file-system path "
                           f"({type(resource).__name__}): install fedprofile as files, not "
                           "from a zip archive.")
    return resource


def contract_path(name: str) -> Path | None:
    """The shipped contract called ``name`` (``bank``, ``bank.toml`` or ``specs/bank.toml``).

    Returns None when no shipped contract has that name.

    Examples
    --------
    >>> contract_path("bank").name
    'bank.toml'
    >>> contract_path("specs/bank.toml") == contract_path("bank")
    True
    >>> contract_path("my_own.toml") is None
    True
    """
    stem = Path(name)
    if stem.parent not in (Path(), Path(CONTRACTS)):
        return None
    path = packaged_dir(CONTRACTS) / stem.with_suffix(".toml").name
    return path if path.is_file() else None
