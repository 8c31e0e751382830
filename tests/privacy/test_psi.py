"""PSI blinding and the discrete Gaussian: exact counts, commutativity, calibrated noise."""

from __future__ import annotations

import numpy as np
import pytest

from fedprofile.errors import ProtocolError
from fedprofile.privacy.psi import (
    BlindingKey,
    count_common,
    discrete_gaussian,
    hash_to_points,
    overlap_sigma,
    pad_points,
    padded_size,
)


def _count(x: list[str], y: list[str]) -> int:
    a, b = BlindingKey(), BlindingKey()
    rng = np.random.default_rng(0)
    double = b.blind(a.blind(hash_to_points(x), rng), rng)
    return count_common(double, a.blind(b.blind(hash_to_points(y), rng)))


def test_psi_count_equals_the_true_intersection() -> None:
    # Prepare
    x = [f"pid-{i}" for i in range(0, 700)]
    y = [f"pid-{i}" for i in range(550, 1200)] + ["pid-3", "pid-3"]
    # Execute / Assert
    assert _count(x, y) == len(set(x) & set(y)) == 151
    assert _count(x, [f"other-{i}" for i in range(300)]) == 0


def test_blinding_is_fresh_per_key_and_hides_the_points() -> None:
    points = hash_to_points(["pid-1", "pid-2"])
    first, second = BlindingKey().blind(points), BlindingKey().blind(points)
    assert count_common(first, second) == 0
    assert count_common(first, points) == 0
    restored = BlindingKey.from_bytes(BlindingKey().to_bytes())
    assert restored.blind(points).shape == (2, 32)


def test_a_low_order_point_is_refused() -> None:
    with pytest.raises(ProtocolError, match="not a valid curve point"):
        BlindingKey().blind(np.zeros((1, 32), dtype=np.uint8))
    with pytest.raises(ProtocolError, match="rows of 32 bytes"):
        BlindingKey().blind(np.zeros((3, 31), dtype=np.uint8))


@pytest.mark.parametrize("sigma", [0.7, 4.2247, 25.0])
def test_discrete_gaussian_is_calibrated(sigma: float) -> None:
    # Prepare
    rng = np.random.default_rng(11)
    n = 40_000
    # Execute
    draws = np.array([discrete_gaussian(sigma, rng) for _ in range(n)])
    # Assert: integers, centred, variance sigma^2 (within 4 standard errors)
    assert draws.dtype.kind == "i"
    assert abs(draws.mean()) < 4 * sigma / np.sqrt(n)
    assert abs(draws.var() / sigma**2 - 1) < 4 * np.sqrt(2 / n) + (0.02 if sigma < 1 else 0)
    # the tail matches the Gaussian's: P(|Z| > 2 sigma) about 4.6 %
    assert abs(np.mean(np.abs(draws) > 2 * sigma) - 0.0455) < (0.03 if sigma < 1 else 0.006)


def test_overlap_sigma_at_epsilon_one_and_infinity() -> None:
    assert overlap_sigma(float("inf"), 1e-6) == 0.0
    assert discrete_gaussian(0.0, np.random.default_rng(0)) == 0
    assert 4.0 < overlap_sigma(1.0, 1e-6) < 4.5


@pytest.mark.parametrize(("n", "padded"), [(0, 16), (1, 16), (16, 16), (17, 20), (100, 112),
                                           (128, 128), (1365, 1536), (10**6, 1048576)])
def test_padded_sizes_are_public_buckets_within_a_quarter(n: int, padded: int) -> None:
    assert padded_size(n) == padded
    assert padded_size(n) <= max(16, 1.25 * n)


def test_padding_keeps_the_real_points_and_adds_distinct_dummies() -> None:
    real = hash_to_points([f"id-{i}" for i in range(100)])
    padded = pad_points(real)
    assert padded.shape == (112, 32) and np.array_equal(padded[:100], real)
    assert count_common(padded[100:], real) == 0 and (padded[:, 31] < 0x80).all()
