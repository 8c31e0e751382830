"""Nearest-centre assignment in the contract's scaled space: the one rule of partners and models."""

from __future__ import annotations

import numpy as np

__all__ = ["assign"]

_CHUNK_ROWS = 65_536


def assign(matrix: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean distance) of every row, in chunks."""
    labels = np.empty(len(matrix), dtype=np.int64)
    c_sq = np.einsum("ij,ij->i", centers, centers)
    for start in range(0, len(matrix), _CHUNK_ROWS):
        block = np.asarray(matrix[start:start + _CHUNK_ROWS], dtype=float)
        dist = c_sq[None, :] - 2.0 * block @ centers.T
        labels[start:start + len(block)] = np.argmin(dist, axis=1)
    return labels
