"""Shamir t-of-n secret sharing over the prime field of order ``2**256 + 297``.

A secret of up to 32 bytes is one field element; a share is its polynomial's value at the
holder's 1-based index, 33 bytes big-endian. The coefficients come from :mod:`secrets`, the
arithmetic is Python's own integers. Secure aggregation shares one fresh self-mask seed per
partner per round and rebuilds one per survivor, so the cost grows with the square of the
partners; here the Lagrange weights of a set of holders are computed once per set and reused
for every secret it rebuilds. (pycryptodome's ``Shamir`` works in GF(2**128) with
multiplication written in Python and recomputes the weights per secret: at 100 partners it
took 77 % of a secure round.)
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from functools import lru_cache

from fedprofile.errors import ProtocolError

__all__ = ["MAX_SECRET_BYTES", "PRIME", "SHARE_BYTES", "combine", "split"]

PRIME = 2**256 + 297
"""The smallest prime above ``2**256``, so every 32-byte secret is a field element."""
SHARE_BYTES = 33
MAX_SECRET_BYTES = 32


def split(secret: bytes, k: int, n: int) -> list[bytes]:
    """``n`` shares of ``secret`` of which any ``k`` rebuild it; share ``i`` has index ``i + 1``.

    Fewer than ``k`` shares are independent of the secret (uniform on the field).
    """
    if not 1 <= len(secret) <= MAX_SECRET_BYTES:
        raise ValueError(f"Shamir sharing takes secrets of 1 to {MAX_SECRET_BYTES} bytes.")
    if not 1 <= k <= n:
        raise ValueError(f"A {k}-of-{n} sharing needs 1 <= k <= n.")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(k - 1)]
    shares = []
    for x in range(1, n + 1):
        value = 0
        for coefficient in reversed(coefficients):
            value = (value * x + coefficient) % PRIME
        shares.append(value.to_bytes(SHARE_BYTES, "big"))
    return shares


@lru_cache(maxsize=256)
def _weights(indices: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange weights that evaluate the polynomial through ``indices`` at zero."""
    weights = []
    for i in indices:
        numerator = denominator = 1
        for j in indices:
            if j != i:
                numerator = numerator * j % PRIME
                denominator = denominator * (j - i) % PRIME
        weights.append(numerator * pow(denominator, -1, PRIME) % PRIME)
    return tuple(weights)


def combine(shares: Mapping[int, bytes], k: int, length: int) -> bytes:
    """Rebuild a ``length``-byte secret from at least ``k`` shares keyed by 1-based index.

    Raises
    ------
    ProtocolError
        Fewer than ``k`` well-formed shares, or the shares do not rebuild a ``length``-byte
        secret (a wrong share was sent). A wrong share that still yields such a secret is
        caught by the caller's commitment check.
    """
    valid = {i: s for i, s in shares.items() if isinstance(i, int) and i >= 1
             and isinstance(s, bytes) and len(s) == SHARE_BYTES
             and int.from_bytes(s, "big") < PRIME}
    if len(valid) < k:
        raise ProtocolError(f"Secure aggregation failed: {len(valid)} well-formed shares "
                            f"received, {k} needed to reconstruct a secret.")
    chosen = sorted(valid)[:k]
    weights = _weights(tuple(chosen))
    value = sum(w * int.from_bytes(valid[i], "big") for w, i in zip(weights, chosen,
                                                                        strict=True)) % PRIME
    if value >> (8 * length):
        raise ProtocolError("Secure aggregation failed: the shares do not rebuild a secret of "
                            f"{length} bytes (a wrong share was sent).")
    return value.to_bytes(length, "big")
