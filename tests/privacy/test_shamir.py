"""Shamir sharing over the prime field: any k shares rebuild, fewer reveal nothing."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from fedprofile.errors import ProtocolError
from fedprofile.privacy.secagg import shamir


def test_the_modulus_is_a_prime_above_every_32_byte_secret() -> None:
    p = shamir.PRIME
    assert p > 2 ** (8 * shamir.MAX_SECRET_BYTES)
    d, r = p - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    rng = random.Random(0)
    for _ in range(40):  # Miller-Rabin: a composite passes 40 rounds with probability < 4**-40
        x = pow(rng.randrange(2, p - 1), d, p)
        if x in (1, p - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, p)
            if x == p - 1:
                break
        else:
            pytest.fail("the modulus is composite")


@pytest.mark.parametrize("secret", [b"\x00", bytes(16), b"\xff" * 32, bytes(range(32))])
def test_every_k_subset_rebuilds_the_secret(secret: bytes) -> None:
    shares = shamir.split(secret, 3, 5)
    assert all(len(s) == shamir.SHARE_BYTES for s in shares)
    for chosen in itertools.combinations(range(5), 3):
        assert shamir.combine({i + 1: shares[i] for i in chosen}, 3, len(secret)) == secret
    assert shamir.combine({i + 1: s for i, s in enumerate(shares)}, 3, len(secret)) == secret


def test_fewer_than_k_or_malformed_shares_are_refused() -> None:
    shares = shamir.split(b"k" * 32, 3, 5)
    with pytest.raises(ProtocolError, match="2 well-formed shares received, 3 needed"):
        shamir.combine({1: shares[0], 2: shares[1]}, 3, 32)
    malformed = {1: shares[0], 2: shares[1], 3: shares[2][:-1], 0: shares[3],
                 4: shamir.PRIME.to_bytes(shamir.SHARE_BYTES, "big")}
    with pytest.raises(ProtocolError, match="2 well-formed shares"):
        shamir.combine(malformed, 3, 32)


def test_a_wrong_share_does_not_rebuild_the_secret() -> None:
    secret = b"s" * 16
    shares = shamir.split(secret, 2, 3)
    forged = (int.from_bytes(shares[1], "big") + 1).to_bytes(shamir.SHARE_BYTES, "big")
    try:
        rebuilt = shamir.combine({1: shares[0], 2: forged}, 2, 16)
    except ProtocolError as exc:
        assert "wrong share" in str(exc)
    else:
        assert rebuilt != secret


def test_one_share_is_uniform_whatever_the_secret() -> None:
    """Below the threshold a share's value does not depend on the secret (chi-squared)."""
    for secret in (bytes(32), b"\xff" * 32):
        low_bits = np.array([int.from_bytes(shamir.split(secret, 2, 3)[0], "big") % 16
                             for _ in range(4000)])
        counts = np.bincount(low_bits, minlength=16)
        chi2 = float(((counts - 250.0) ** 2 / 250.0).sum())
        assert chi2 < 37.7  # the 0.999 quantile of chi-squared with 15 degrees of freedom


@pytest.mark.parametrize(("secret", "k", "n"), [(b"", 2, 3), (bytes(33), 2, 3),
                                                 (b"x", 0, 3), (b"x", 4, 3)])
def test_bad_parameters_are_refused(secret: bytes, k: int, n: int) -> None:
    with pytest.raises(ValueError):
        shamir.split(secret, k, n)
