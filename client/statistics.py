"""Local statistics a partner computes on its scaled matrix (before any noise)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from fedprofile.contract.assignment import assign

__all__ = ["cluster_partials"]

_CHUNK_ROWS = 65_536


def cluster_partials(matrix: np.ndarray, centers: np.ndarray, radius: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-centre sums (k x d) and counts (k) of the rows nearest to each centre.

    With ``radius`` 0 a row adds itself to its centre's sum: under add/remove adjacency one
    customer changes one row of the sums by its vector (L2 norm at most the contract's
    ``norm_bound``) and one count by 1. With ``radius`` > 0 a row adds its displacement from
    its centre, ``x - c``, shortened to L2 norm at most ``radius``: the sums' sensitivity is
    then ``radius`` (``c + sums / counts`` is Lloyd's step with far rows' pull capped).
    """
    k, d = centers.shape
    sums, counts = np.zeros((k, d)), np.zeros(k)
    for start in range(0, len(matrix), _CHUNK_ROWS):
        block = np.asarray(matrix[start:start + _CHUNK_ROWS], dtype=float)
        labels = assign(block, centers)
        if radius > 0.0:
            block = block - centers[labels]
            norms = np.linalg.norm(block, axis=1)
            block *= np.minimum(1.0, radius / np.maximum(norms, 1e-300))[:, None]
        onehot = sparse.csr_matrix((np.ones(len(block)), (labels, np.arange(len(block)))),
                                   shape=(k, len(block)))
        sums += onehot @ block
        counts += np.bincount(labels, minlength=k)
    return sums, counts
