"""PSI cardinality by commutative blinding on X25519, and discrete Gaussian noise for its count.

Every pseudonym is hashed to a curve point ``u = SHA-256(domain || pseudonym)`` and blinded
with a fresh per-query X25519 scalar: ``E_a(u) = X25519(a, u)``. Scalar multiplication on the
Montgomery ladder commutes, so ``E_b(E_a(u)) == E_a(E_b(u))`` and two parties who each blind
the other's already-blinded values can count equal doubly-blinded values without seeing a
pseudonym (Meadows 1986; Huberman, Franklin & Hogg 1999; the route of the research note
``secagg_psi_latency.md`` §3.3, with no dependency beyond ``cryptography``).
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from fedprofile.errors import ProtocolError
from fedprofile.privacy.accounting import gdp_mu

__all__ = ["POINT_BYTES", "BlindingKey", "count_common", "count_distinct", "discrete_gaussian",
           "hash_to_points", "overlap_sigma", "pad_points", "padded_size"]

POINT_BYTES = 32
_DOMAIN = b"fedprofile-psi-v1\x00"


def hash_to_points(pseudonyms: Iterable[str], context: bytes = b"") -> np.ndarray:
    """Keyed pseudonyms -> distinct curve points (``n x 32`` uint8), never the pseudonyms.

    ``context`` separates the hash per query: a point hashed under one context never
    matches one hashed under another.
    """
    unique = sorted(set(pseudonyms))
    prefix = _DOMAIN + len(context).to_bytes(4, "big") + context
    out = np.empty((len(unique), POINT_BYTES), dtype=np.uint8)
    for i, pid in enumerate(unique):
        digest = bytearray(hashlib.sha256(prefix + pid.encode("utf-8")).digest())
        digest[31] &= 0x7F  # X25519 ignores the top bit of u; clear it for a canonical value
        out[i] = np.frombuffer(bytes(digest), dtype=np.uint8)
    return out


def padded_size(n: int) -> int:
    """The public size a set of ``n`` points is padded to, seen only to within 25 %.

    At least 16, then steps of at most a quarter of ``n``: 17 -> 20, 100 -> 112,
    1,365 -> 1,536.
    """
    if n <= 16:
        return 16
    step = 2 ** (n.bit_length() - 3)
    return -(-n // step) * step


def pad_points(points: np.ndarray) -> np.ndarray:
    """``points`` followed by random dummy points up to :func:`padded_size`.

    A dummy is 32 random bytes with the top bit cleared, distributed as a hashed pseudonym
    is, so after blinding no one can tell it from a real point; it matches the other side's
    set with probability about ``2**-255`` per pair, so counts are unchanged.
    """
    extra = padded_size(len(points)) - len(points)
    dummies = np.frombuffer(secrets.token_bytes(extra * POINT_BYTES), dtype=np.uint8)
    dummies = dummies.reshape(extra, POINT_BYTES).copy()
    dummies[:, 31] &= 0x7F
    return np.concatenate([np.asarray(points, dtype=np.uint8).reshape(-1, POINT_BYTES),
                           dummies])


class BlindingKey:
    """A fresh X25519 scalar for one query; blinds points and shuffles the result."""

    def __init__(self, key: X25519PrivateKey | None = None) -> None:
        self._key = key or X25519PrivateKey.generate()

    def to_bytes(self) -> bytes:
        """The raw scalar (kept in the partner's own state between two steps of one query)."""
        return self._key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @classmethod
    def from_bytes(cls, raw: bytes) -> BlindingKey:
        """The key of :meth:`to_bytes`."""
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def blind(self, points: np.ndarray, rng: np.random.Generator | None = None
              ) -> np.ndarray:
        """``X25519(key, u)`` for every row, in a random order (shuffled when ``rng``).

        Raises
        ------
        ProtocolError
            If a row is not a 32-byte point or is a low-order point (a malformed set).
        """
        pts = np.ascontiguousarray(points, dtype=np.uint8)
        if pts.ndim != 2 or pts.shape[1] != POINT_BYTES:
            raise ProtocolError(f"Blinded values must be rows of {POINT_BYTES} bytes.")
        out = np.empty_like(pts)
        exchange = self._key.exchange
        try:
            for i, row in enumerate(pts):
                out[i] = np.frombuffer(exchange(X25519PublicKey.from_public_bytes(row.tobytes())),
                                       dtype=np.uint8)
        except ValueError:
            raise ProtocolError("A blinded value is not a valid curve point.") from None
        if rng is not None:
            out = out[rng.permutation(len(out))]
        return out


def count_distinct(points: np.ndarray) -> int:
    """How many distinct rows ``points`` holds."""
    rows = np.ascontiguousarray(points, dtype=np.uint8).view(f"V{POINT_BYTES}").ravel()
    return len(np.unique(rows))


def count_common(a: np.ndarray, b: np.ndarray) -> int:
    """How many rows of ``a`` also occur in ``b`` (rows compared as 32-byte strings)."""
    if len(a) == 0 or len(b) == 0:
        return 0
    va = np.ascontiguousarray(a, dtype=np.uint8).view(f"V{POINT_BYTES}").ravel()
    vb = np.ascontiguousarray(b, dtype=np.uint8).view(f"V{POINT_BYTES}").ravel()
    return int(np.isin(va, vb).sum())


def overlap_sigma(epsilon: float, delta: float) -> float:
    """Noise scale of one overlap count (sensitivity 1) at ``(epsilon, delta)``: ``1/mu``.

    The discrete Gaussian of scale ``sigma`` is at least as private as the continuous one
    up to a negligible term (Canonne, Kamath & Steinke 2020), so the release is accounted
    as a Gaussian release with noise multiplier ``sigma``.
    """
    if math.isinf(epsilon):
        return 0.0
    return 1.0 / gdp_mu(epsilon, delta)


def _discrete_laplace(t: int, rng: np.random.Generator) -> int:
    """P(y) proportional to exp(-|y|/t): the difference of two geometric variables."""
    p = 1.0 - math.exp(-1.0 / t)
    return int(rng.geometric(p) - rng.geometric(p))


def discrete_gaussian(sigma: float, rng: np.random.Generator) -> int:
    """One draw of the discrete Gaussian ``N_Z(0, sigma^2)`` (0 when ``sigma == 0``).

    Rejection from a discrete Laplace (Canonne, Kamath & Steinke 2020, Algorithm 3), in
    floating point.
    """
    if sigma <= 0:
        return 0
    t = math.floor(sigma) + 1
    while True:
        y = _discrete_laplace(t, rng)
        accept = math.exp(-((abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        if rng.random() < accept:
            return y
