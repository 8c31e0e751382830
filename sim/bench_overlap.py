"""Time and bytes of one overlap (PSI cardinality) pair at a given set size, in process.

The three protocol steps with the partners' real computation (hashing to points, padding,
fresh-key blinding, shuffling, counting) and the bytes the relay would carry; no Flower transport.
``python -m fedprofile.sim.bench_overlap 10000 [1000000]``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np

from fedprofile.privacy.psi import BlindingKey, count_common, hash_to_points, pad_points

__all__ = ["bench_pair"]


def bench_pair(n: int, *, shared: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """One pair of ``n`` x ``n`` pseudonyms sharing ``shared`` of them: seconds and bytes."""
    k = round(n * shared)
    x = [f"a{i:09d}" for i in range(n)]
    y = [f"a{i:09d}" for i in range(n - k, n)] + [f"b{i:09d}" for i in range(n - k)]
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    a, b = BlindingKey(), BlindingKey()
    px, py = pad_points(hash_to_points(x)), pad_points(hash_to_points(y))
    hashed = time.perf_counter()
    first = a.blind(px, rng)                       # step 1 at A
    double, own = b.blind(first, rng), b.blind(py, rng)  # step 2 at B
    count = count_common(double, a.blind(own))     # step 3 at A
    end = time.perf_counter()
    assert count == k
    return {"n": n, "true": k, "count": count, "hash_s": round(hashed - start, 2),
            "protocol_s": round(end - hashed, 2), "total_s": round(end - start, 2),
            "relayed_bytes": int(first.nbytes + double.nbytes + own.nbytes)}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        sys.stdout.write(json.dumps(bench_pair(int(arg))) + "\n")
        sys.stdout.flush()
