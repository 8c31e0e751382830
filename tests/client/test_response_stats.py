"""Partner-side statistics of response models: Gram matrices, clipped gradient sums, noise."""

from __future__ import annotations

import numpy as np
import pytest

from fedprofile.client.response import clipped_gradient_sum, gram_statistics, upper_triangle
from fedprofile.privacy.events import GaussianEvent, NonPrivateEvent
from fedprofile.privacy.mechanisms import GaussianMechanism

N_ROWS = 70_000  # more than one chunk of 65,536 rows
DRAWS = 3_000


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _per_customer_gradients(z: np.ndarray, y: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``g_i = (sigmoid(z_i . theta) - y_i) z_i``, one row per customer."""
    return (_sigmoid(z @ theta) - y)[:, None] * z


def _hand_clipped_sum(z: np.ndarray, y: np.ndarray, theta: np.ndarray, clip: float
                      ) -> np.ndarray:
    g = _per_customer_gradients(z, y, theta)
    norms = np.linalg.norm(g, axis=1)
    return np.sum(np.minimum(1.0, clip / norms)[:, None] * g, axis=0)


@pytest.fixture(scope="module")
def logistic_rows() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    z = np.hstack([rng.uniform(-0.5, 0.5, size=(N_ROWS, 4)), np.ones((N_ROWS, 1))])
    theta = rng.normal(0.0, 2.0, size=5)
    y = (rng.random(N_ROWS) < _sigmoid(z @ theta + rng.normal(size=N_ROWS))).astype(float)
    return z, y, theta


# --- gram_statistics and upper_triangle -------------------------------------------------------


def test_upper_triangle_is_row_major_with_the_diagonal() -> None:
    # Prepare
    matrix = np.arange(9.0).reshape(3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]

    # Execute / Assert
    np.testing.assert_array_equal(upper_triangle(matrix), [0, 1, 2, 4, 5, 8])


def test_gram_statistics_of_a_three_by_two_matrix_by_hand() -> None:
    # Prepare
    z = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    y = np.array([1.0, 0.0, -1.0])

    # Execute
    upper, xty = gram_statistics(z, y)

    # Assert: Z'Z = [[1+9+25, 2+12+30], [., 4+16+36]]; Z'y = [1-5, 2-6]
    np.testing.assert_array_equal(upper, [35.0, 44.0, 56.0])
    np.testing.assert_array_equal(xty, [-4.0, -4.0])


def test_gram_statistics_without_target_returns_an_empty_xty() -> None:
    # Execute
    upper, xty = gram_statistics(np.array([[1.0, 2.0], [3.0, 4.0]]), None)

    # Assert
    np.testing.assert_array_equal(upper, [10.0, 14.0, 20.0])
    assert xty.shape == (0,)


def test_gram_statistics_over_several_chunks_equals_one_product(logistic_rows) -> None:
    # Prepare
    z, y, _ = logistic_rows
    assert len(z) > 65_536

    # Execute
    upper, xty = gram_statistics(z, y)

    # Assert
    np.testing.assert_allclose(upper, upper_triangle(z.T @ z), rtol=1e-12, atol=1e-8)
    np.testing.assert_allclose(xty, z.T @ y, rtol=1e-12, atol=1e-8)


# --- clipped_gradient_sum ---------------------------------------------------------------------


def _clip_for(kind: str, z: np.ndarray, y: np.ndarray, theta: np.ndarray) -> float:
    norms = np.linalg.norm(_per_customer_gradients(z, y, theta), axis=1)
    return {"no-clipping": 10.0 * float(norms.max()),
            "median": float(np.median(norms)),
            "every-row": 0.5 * float(norms.min())}[kind]


@pytest.mark.parametrize("kind", ["no-clipping", "median", "every-row"])
def test_clipped_gradient_sum_equals_the_hand_formula(logistic_rows, kind) -> None:
    # Prepare
    z, y, theta = logistic_rows
    clip = _clip_for(kind, z, y, theta)

    # Execute
    total = clipped_gradient_sum(z, y, theta, clip)

    # Assert
    np.testing.assert_allclose(total, _hand_clipped_sum(z, y, theta, clip), rtol=1e-10,
                               atol=1e-9)


def test_clipping_every_row_sums_unit_directions_times_the_clip(logistic_rows) -> None:
    # Prepare
    z, y, theta = logistic_rows
    g = _per_customer_gradients(z, y, theta)
    clip = 0.5 * float(np.linalg.norm(g, axis=1).min())

    # Execute
    total = clipped_gradient_sum(z, y, theta, clip)

    # Assert
    directions = g / np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(total, clip * directions.sum(axis=0), rtol=1e-10, atol=1e-9)


def test_clipped_gradient_sum_at_zero_theta_is_the_unclipped_sum_by_hand() -> None:
    # Prepare: sigmoid(0) = 1/2, so g_i = (1/2 - y_i) z_i
    z = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    y = np.array([1.0, 0.0, 1.0])

    # Execute
    total = clipped_gradient_sum(z, y, np.zeros(2), 100.0)

    # Assert: -1/2 [1, 0] + 1/2 [0, 2] - 1/2 [1, 1] = [-1, 1/2]
    np.testing.assert_allclose(total, [-1.0, 0.5], rtol=0, atol=1e-12)


def test_one_customer_changes_the_clipped_sum_by_at_most_the_clip(logistic_rows) -> None:
    # Prepare
    z, y, theta = logistic_rows
    z, y, clip = z[:2000], y[:2000], 0.05
    full = clipped_gradient_sum(z, y, theta, clip)

    # Execute
    changes = [np.linalg.norm(full - clipped_gradient_sum(np.delete(z, i, axis=0),
                                                          np.delete(y, i), theta, clip))
               for i in (0, 17, 1999)]

    # Assert
    assert max(changes) <= clip * (1 + 1e-9)


# --- noise calibration, as client/app.py releases ---------------------------------------------


def _noise_std(mech: GaussianMechanism, exact: np.ndarray, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    noise = np.stack([mech.randomise(exact, rng) - exact for _ in range(DRAWS)])
    return float(noise.std()), float(noise.mean())


@pytest.mark.parametrize(("clip", "z"), [(1.0, 1.0), (2.6, 0.7), (0.05, 12.0)],
                         ids=["clip=1-z=1", "clip=2.6-z=0.7", "clip=0.05-z=12"])
def test_gradient_noise_has_std_noise_multiplier_times_clip(logistic_rows, clip, z) -> None:
    # Prepare: the partner's gradient mechanism (client/app.py::gradient)
    rows, y, theta = logistic_rows
    exact = clipped_gradient_sum(rows[:500], y[:500], theta, clip)
    mech = GaussianMechanism(sensitivity=clip, noise_multiplier=z)

    # Execute
    std, mean = _noise_std(mech, exact, seed=11)

    # Assert
    sigma = z * clip
    assert std == pytest.approx(sigma, rel=0.03)
    assert abs(mean) <= 5 * sigma / np.sqrt(DRAWS * exact.size)
    assert mech.event(stage="logistic", round=1, component="gradient") == GaussianEvent(
        noise_multiplier=z, sensitivity=clip, stage="logistic", round=1, component="gradient")


@pytest.mark.parametrize(("bound", "z"), [(2.6, 0.5), (1.0, 3.0)],
                         ids=["B=2.6-z=0.5", "B=1-z=3"])
def test_gram_noise_has_std_noise_multiplier_times_bound_squared(bound, z) -> None:
    # Prepare: the partner's Gram mechanism (client/app.py::gram), sensitivity B**2
    rng = np.random.default_rng(3)
    rows = rng.uniform(-0.5, 0.5, size=(200, 6))
    exact, _ = gram_statistics(rows, None)
    mech = GaussianMechanism(sensitivity=bound**2, noise_multiplier=z)

    # Execute
    std, mean = _noise_std(mech, exact, seed=5)

    # Assert
    sigma = z * bound**2
    assert std == pytest.approx(sigma, rel=0.03)
    assert abs(mean) <= 5 * sigma / np.sqrt(DRAWS * exact.size)


def test_a_zero_noise_multiplier_releases_the_exact_statistic() -> None:
    # Prepare
    exact = np.array([1.0, -2.0, 3.5])
    mech = GaussianMechanism(sensitivity=2.0, noise_multiplier=0.0)

    # Execute
    released = mech.randomise(exact, np.random.default_rng(0))

    # Assert
    np.testing.assert_array_equal(released, exact)
    assert isinstance(mech.event(stage="ridge", round=0, component="gram"), NonPrivateEvent)
