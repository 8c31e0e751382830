"""Quantisation for secure aggregation: exactness bound, no wrap-around, rounded sensitivity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedprofile.errors import ContractError, ProtocolError
from fedprofile.privacy.mechanisms import secure_rng
from fedprofile.privacy.secagg.quantize import (
    MAX_BITS,
    choose_quantization,
    noise_tail,
    rounded_sensitivity,
)


@pytest.mark.parametrize(("bound", "dim", "partners"), [(1.0, 3, 2), (5e4, 1000, 10),
                                                         (1e9, 50, 100), (1e-3, 10, 5)])
def test_decoded_sum_within_stated_bound(bound: float, dim: int, partners: int) -> None:
    rng = secure_rng(0)
    plan = choose_quantization(bound=bound, dim=dim, partners=partners)
    vecs = [rng.uniform(-1, 1, dim) * bound / math.sqrt(dim) for _ in range(partners)]
    total = np.zeros(dim, dtype=np.uint64)
    for v in vecs:
        total += plan.encode(plan.quantize(v, rng))
    decoded = plan.decode_sum(total)
    err = np.max(np.abs(decoded - np.sum(vecs, axis=0)))
    # the float64 terms: the decoded sum's conversion, and the reference np.sum's own error
    magnitude = float(np.sum(np.abs(vecs), axis=0).max())
    assert err < plan.rounding_error_bound(magnitude=partners * magnitude)
    # realistic sizes: relative to the bound the error is far below 1e-6
    assert err / bound <= 1e-6


def test_exact_integer_sum_and_signed_lift() -> None:
    plan = choose_quantization(bound=10.0, dim=4, partners=3)
    ints = [np.array([-5, 7, 0, -(2**30)]), np.array([3, -9, 1, 2**30]),
            np.array([-1, -1, -1, -1])]
    total = np.zeros(4, dtype=np.uint64)
    for z in ints:
        total += plan.encode(z)
    assert (plan.decode_sum(total) * plan.scale).tolist() == [-3, -3, 0, -1]


def test_rounding_is_unbiased() -> None:
    plan = choose_quantization(bound=1.0, dim=1, partners=1)
    small = type(plan)(bound=1.0, dim=20_000, partners=1, scale=4.0, bits=plan.bits)
    rng = secure_rng(3)
    z = small.quantize(np.full(20_000, 0.3 / math.sqrt(20_000)), rng)
    # 0.3/sqrt(d)*4 ~ 0.0085: rounds to 0 or 1 with the right mean
    assert set(np.unique(z)) <= {0, 1}
    assert abs(z.mean() - 4 * 0.3 / math.sqrt(20_000)) < 5 * math.sqrt(0.0085 / 20_000)


def test_no_wrap_margin_holds_with_noise() -> None:
    plan = choose_quantization(bound=1e3, dim=10_000, partners=100, share_sd=50.0)
    worst = plan.partners * (plan.scale * plan.bound * (1 + 2**-20) + 1)
    tail = noise_tail(plan.partners * (plan.scale * 50.0) ** 2, plan.dim, 2.0**-40)
    assert worst + tail < 2 ** (plan.bits - 1)
    assert plan.bits <= MAX_BITS
    assert plan.scale * 50.0 <= 2**20  # share resolution cap
    # the modulus is the smallest that fits: one bit less would not
    assert worst + tail + 1 > 2 ** (plan.bits - 2)


@pytest.mark.parametrize(("bound", "partners"), [(1e8, 2), (6.75e8, 5), (1e8, 100)])
def test_without_noise_the_scale_fills_the_ring(bound: float, partners: int) -> None:
    # Prepare: the plan of a noiseless sum, from public values only
    plan = choose_quantization(bound=bound, dim=5, partners=partners)
    # Assert: the largest power of two that fits 62 bits; twice it would not fit
    assert plan.bits == MAX_BITS
    assert partners * (plan.scale * bound * (1 + 2**-20) + 1) + 1 < 2.0 ** (MAX_BITS - 1)
    assert partners * (2 * plan.scale * bound + 1) + 1 > 2.0 ** (MAX_BITS - 1)


def test_vectors_at_the_bound_sum_without_wrapping_on_a_full_ring() -> None:
    # Prepare: every partner's vector at the L2 bound, all coordinates of one sign
    dim, partners, bound = 1000, 7, 3e8
    plan = choose_quantization(bound=bound, dim=dim, partners=partners)
    rng = secure_rng(2)
    vecs = [np.abs(rng.normal(size=dim)) for _ in range(partners)]
    vecs = [v * (bound * 1.5 / np.linalg.norm(v)) for v in vecs]  # clipped to the bound
    # Execute
    total = np.zeros(dim, dtype=np.uint64)
    for v in vecs:
        total = (total + plan.encode(plan.quantize(v, rng))) & plan.modulus_mask
    decoded = plan.decode_sum(total)
    # Assert: no coordinate wrapped, and each is within the stated bound
    clipped = np.sum([v / 1.5 for v in vecs], axis=0)
    assert np.all(decoded > 0)
    assert np.max(np.abs(decoded - clipped)) < plan.rounding_error_bound(
        magnitude=float(np.abs(clipped).max()) * 1.01)


def test_bound_violating_vector_is_clipped_not_wrapped() -> None:
    plan = choose_quantization(bound=1.0, dim=2, partners=2)
    rng = secure_rng(1)
    total = plan.encode(plan.quantize(np.array([3e6, -4e6]), rng)) + plan.encode(
        plan.quantize(np.array([0.0, 0.0]), rng))
    np.testing.assert_allclose(plan.decode_sum(total), [0.6, -0.8], atol=2 / plan.scale)


def test_rounded_sensitivity_covers_the_coupled_rounding() -> None:
    """Same uniforms for D and D + one customer: the integer change obeys the stated bounds."""
    dim, delta = 50, 2.0
    plan = choose_quantization(bound=1e3, dim=dim, partners=3)
    plan = type(plan)(bound=1e3, dim=dim, partners=3, scale=8.0, bits=plan.bits)
    l2, l1 = rounded_sensitivity(delta, plan.scale, dim)
    base = secure_rng(5)
    for trial in range(200):
        a = base.uniform(-100, 100, dim)
        x = base.normal(size=dim)
        x *= delta / np.linalg.norm(x) * base.uniform(0.5, 1.0)
        e = (plan.quantize(a + x, secure_rng(trial)) - plan.quantize(a, secure_rng(trial)))
        assert np.all(np.abs(e) < plan.scale * np.abs(x) + 1)
        assert np.linalg.norm(e) <= l2 and np.abs(e).sum() <= l1


@pytest.mark.parametrize("kwargs", [{"bound": 0.0}, {"bound": math.nan}, {"dim": 0},
                                    {"partners": True}, {"max_bits": 63},
                                    {"share_sd": -1.0}, {"failure_prob": 0.0}])
def test_bad_parameters_name_the_problem(kwargs: dict) -> None:
    args = {"bound": 1.0, "dim": 3, "partners": 2, **kwargs}
    with pytest.raises(ContractError, match=next(iter(kwargs))):
        choose_quantization(**args)


def test_bad_vectors_are_refused_without_values() -> None:
    plan = choose_quantization(bound=1.0, dim=3, partners=2)
    with pytest.raises(ProtocolError, match=r"shape \(3,\)"):
        plan.quantize(np.zeros(4), secure_rng(0))
    with pytest.raises(ProtocolError, match="finite") as info:
        plan.quantize(np.array([0.123456, np.nan, 1.0]), secure_rng(0))
    assert "0.123456" not in str(info.value)
