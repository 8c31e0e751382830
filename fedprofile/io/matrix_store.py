"""A partner's scaled matrix on disk: built chunk by chunk, stored as float32, read mapped.

Scaled values lie in ``[-w/2, w/2]`` for weights ``w`` of order one, so float32 keeps about
seven significant digits, far below any release's noise; values are rounded toward zero, so
no stored row is longer than the contract's norm bound, and statistics are accumulated in
float64 from the stored values. Building never holds more than one chunk of the table, and
reading maps the file rather than loading it, so a partner's memory does not grow with the
number of its customers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from fedprofile.contract.features import DataQualityReport, resolve_columns, transform_frame
from fedprofile.contract.spec import FeatureSpec

__all__ = ["CHUNK_ROWS", "STORAGE_DTYPE", "frame_chunks", "stored_values", "to_storage",
           "write_matrix"]

STORAGE_DTYPE = np.dtype(np.float32)
CHUNK_ROWS = 131_072


def to_storage(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` as float32, rounded toward zero.

    Rounding to nearest could lift a value just past its bound (float32(0.15) > 0.15), and
    with it a row's norm past the contract's ``norm_bound``, the sensitivity every release
    is calibrated to; toward zero, no stored value is larger in magnitude than the exact one.
    """
    exact = np.asarray(matrix, dtype=np.float64)
    stored = exact.astype(STORAGE_DTYPE)
    over = np.abs(stored) > np.abs(exact)
    stored[over] = np.nextafter(stored[over], STORAGE_DTYPE.type(0))
    return stored


def stored_values(matrix: np.ndarray) -> np.ndarray:
    """The values a stored matrix holds, as float64 for computation."""
    return to_storage(matrix).astype(np.float64)


def frame_chunks(frame: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Consecutive row slices of ``frame`` (views, not copies)."""
    for start in range(0, len(frame), chunk_rows):
        yield frame.iloc[start:start + chunk_rows]


def write_matrix(tables: Iterable[pd.DataFrame], spec: FeatureSpec, path: Path, *,
                 mapping: Mapping[str, str] | None = None,
                 source: str = "partner table") -> DataQualityReport:
    """Transform customer tables, chunk after chunk, into one ``.npy`` file of float32 rows.

    The rows are streamed to a side file and the ``.npy`` header (whose shape is known
    only at the end) is written before them by a streaming copy, so the build needs twice
    the matrix's size on disk for a moment, and one chunk in memory. The chunks' data
    quality counts are merged and checked as one table's.

    Raises
    ------
    DataError
        As :func:`fedprofile.contract.features.transform_frame` for the whole table.
    """
    columns = resolve_columns(spec, mapping)
    report = DataQualityReport()
    rows_path = path.with_name(f"{path.name}.rows")
    try:
        with rows_path.open("wb") as rows:
            for table in tables:
                part = transform_frame(table, spec, mapping=mapping, source=source, check=False)
                to_storage(part.matrix).tofile(rows)
                report = report.merge(part.report)
        report.check(columns, source)
        header = {"descr": np.lib.format.dtype_to_descr(STORAGE_DTYPE), "fortran_order": False,
                  "shape": (report.customers, spec.dim)}
        with path.open("wb") as out, rows_path.open("rb") as src:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(src, out, 1 << 24)
    finally:
        rows_path.unlink(missing_ok=True)
        close = getattr(tables, "close", None)
        if close is not None:  # a reader stopped by an error releases its connection now
            close()
    return report
