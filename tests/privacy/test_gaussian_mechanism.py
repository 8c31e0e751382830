"""Tests for the Gaussian mechanism: calibration, noise statistics, events, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedprofile.errors import ContractError
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent
from fedprofile.privacy.mechanisms import GaussianMechanism, secure_rng


def _value() -> np.ndarray:
    return np.array([[1.5, -2.0, 0.0], [3.25, 4.0, -7.5]])


@pytest.mark.parametrize(("sensitivity", "multiplier"), [(0.0, 3.0), (2.0, 0.0), (0.0, 0.0)],
                         ids=["zero-sensitivity", "zero-multiplier", "both-zero"])
def test_zero_sigma_returns_the_input_unchanged_as_a_copy(sensitivity: float,
                                                          multiplier: float) -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=sensitivity, noise_multiplier=multiplier)
    value = _value()

    # Execute
    out = mech.randomise(value, secure_rng(0))

    # Assert
    assert mech.sigma == 0.0
    np.testing.assert_array_equal(out, value)
    out[0, 0] = 99.0
    assert value[0, 0] == 1.5  # the caller's array is not aliased


def test_zero_multiplier_event_is_non_private() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=2.0, noise_multiplier=0.0)

    # Execute
    event = mech.event(stage="kmeans", round=2, component="sums")

    # Assert
    assert isinstance(event, NonPrivateEvent)
    assert event.sensitivity == 2.0
    assert (event.stage, event.round, event.component) == ("kmeans", 2, "sums")
    assert event.sigma == 0.0
    assert event.mu == math.inf


def test_gaussian_event_carries_sensitivity_sigma_and_mu() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=2.5, noise_multiplier=4.0)

    # Execute
    event = mech.event(stage="kmeans-init", round=0, component="counts")

    # Assert
    assert isinstance(event, GaussianEvent)
    assert event.sensitivity == 2.5
    assert event.noise_multiplier == 4.0
    assert event.sigma == 10.0
    assert event.mu == 0.25
    assert (event.stage, event.round, event.component) == ("kmeans-init", 0, "counts")
    assert event.to_dict() == {"mechanism": "gaussian", "noise_multiplier": 4.0,
                               "sensitivity": 2.5, "stage": "kmeans-init", "round": 0,
                               "component": "counts", "sigma": 10.0, "mu": 0.25}


def test_zero_sensitivity_with_a_positive_multiplier_is_still_accounted_as_gaussian() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=0.0, noise_multiplier=2.0)

    # Execute
    event = mech.event(stage="kmeans", round=1, component="sums")

    # Assert
    assert isinstance(event, GaussianEvent)
    assert event.mu == 0.5


def test_sigma_and_variance_are_calibrated_from_the_declared_sensitivity() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=2.0, noise_multiplier=3.0)

    # Execute / Assert
    assert mech.sigma == 6.0
    assert mech.variance() == 36.0


def test_same_seed_gives_the_same_output_and_another_seed_differs() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=1.0, noise_multiplier=2.0)
    value = _value()

    # Execute
    first = mech.randomise(value, secure_rng(42))
    second = mech.randomise(value, secure_rng(42))
    other = mech.randomise(value, secure_rng(43))

    # Assert
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    assert first.shape == value.shape


def test_unseeded_generators_draw_different_noise() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=1.0, noise_multiplier=1.0)

    # Execute
    a = mech.randomise(np.zeros(8), secure_rng())
    b = mech.randomise(np.zeros(8), secure_rng())

    # Assert
    assert not np.array_equal(a, b)


def test_empirical_noise_has_zero_mean_and_the_declared_variance() -> None:
    # Prepare: 200k draws; the sample variance has relative std sqrt(2/n) ~ 0.32 %, so 2 % is
    # more than 6 standard errors; the mean has std sigma/sqrt(n) ~ 0.0022 sigma.
    n = 200_000
    mech = GaussianMechanism(sensitivity=1.5, noise_multiplier=2.0)
    value = np.full(n, 10.0)

    # Execute
    noise = mech.randomise(value, secure_rng(7)) - value

    # Assert
    assert noise.var(ddof=1) == pytest.approx(mech.variance(), rel=0.02)
    assert abs(noise.mean()) < 5 * mech.sigma / math.sqrt(n)
    assert mech.variance() == pytest.approx(9.0)


def test_noise_is_independent_across_coordinates() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=1.0, noise_multiplier=1.0)

    # Execute
    noise = mech.randomise(np.zeros((100_000, 2)), secure_rng(3))

    # Assert: correlation of independent columns has std 1/sqrt(n) ~ 0.003
    assert abs(np.corrcoef(noise[:, 0], noise[:, 1])[0, 1]) < 0.02


@pytest.mark.parametrize("parameter", ["sensitivity", "noise_multiplier"])
@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, True, "1.0", None],
                         ids=["negative", "nan", "inf", "bool", "string", "none"])
def test_invalid_argument_raises_contract_error_naming_the_parameter(parameter: str,
                                                                     bad: object) -> None:
    # Prepare
    kwargs: dict[str, object] = {"sensitivity": 1.0, "noise_multiplier": 1.0, parameter: bad}

    # Execute / Assert
    with pytest.raises(ContractError, match=f"'{parameter}'"):
        GaussianMechanism(**kwargs)  # type: ignore[arg-type]


def test_mechanism_is_frozen() -> None:
    # Prepare
    mech = GaussianMechanism(sensitivity=1.0, noise_multiplier=1.0)

    # Execute / Assert
    with pytest.raises(AttributeError):
        mech.noise_multiplier = 0.0  # type: ignore[misc]
