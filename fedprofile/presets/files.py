"""Where the presets' data files and contracts are, and checks of a data file's shape."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from fedprofile.errors import DataError
from fedprofile.resources import CONTRACTS, DATA, packaged_dir

DEFAULT_DATA_DIR = packaged_dir(DATA)
SPEC_DIR = packaged_dir(CONTRACTS)


def _default_data_dir() -> Path:
    """``$FEDPROFILE_DATA_DIR``, else the data shipped in the package, else ``./data``.

    A Flower app bundle (FAB) carries code, not data, so under ``flwr run`` the data are
    found through the environment or the working directory when the bundle is imported.
    """
    if os.environ.get("FEDPROFILE_DATA_DIR"):
        return Path(os.environ["FEDPROFILE_DATA_DIR"])
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else Path.cwd() / "data"


def _data_file(data_dir: Path, file_name: str) -> Path:
    """Return the path of a data file, or raise DataError naming it."""
    path = data_dir / file_name
    if not path.is_file():
        raise DataError(
            f"The data file {file_name!r} is not in {str(data_dir)!r}. Copy it there "
            "(see fedprofile/data/README.md for its source) or pass "
            "data_dir=<folder holding it>."
        )
    return path


def _require_columns(frame: pd.DataFrame, columns: list[str], file_name: str) -> None:
    """Raise DataError if ``frame`` lacks any of ``columns``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"The data file {file_name!r} lacks the columns {missing}; "
            "it does not look like the published data set."
        )


def _row_ids(prefix: str, n_rows: int) -> pd.Series:
    """Stable customer ids from the row number, e.g. ``bank-000123``."""
    return pd.Series([f"{prefix}-{i:06d}" for i in range(n_rows)], dtype="str")
