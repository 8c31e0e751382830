"""Oracle tests: at epsilon = inf the federated protocol is exactly Lloyd's algorithm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.cluster import KMeans

from fedprofile.client.response import gram_statistics
from fedprofile.contract.design import design_data, design_norm_bound, target_bound
from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec
from fedprofile.contract.spec import FeatureSpec, NumericFeature
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.secagg.plan import plan_secagg
from fedprofile.server.regression import symmetric_from_upper
from fedprofile.sim.evaluate import kmeans_cost
from fedprofile.sim.inprocess import (
    MAX_PARTNER_CUSTOMERS,
    released,
    run_kmeans_inprocess,
    run_response_inprocess,
)


@pytest.fixture(scope="module")
def bank_partners() -> tuple[list[np.ndarray], object]:
    preset = load_preset("bank")
    spec = load_spec(preset.spec_path)
    mats = [transform_frame(p.frame, spec).matrix for p in preset.partitions(5)]
    return mats, spec


@pytest.mark.parametrize("rounds", [1, 3, 6], ids=["1-round", "3-rounds", "6-rounds"])
def test_federated_lloyd_at_infinite_epsilon_equals_sklearn_lloyd(bank_partners, rounds) -> None:
    # Prepare: a public start of 6 centres, the same for both
    mats, spec = bank_partners
    pooled = np.vstack(mats)
    start = pooled[np.random.default_rng(3).choice(len(pooled), 6, replace=False)]
    # Execute
    fed = run_kmeans_inprocess(mats, spec, k=6, epsilon=math.inf, rounds=rounds,
                               initial_centers=start, init="random")
    central = KMeans(n_clusters=6, init=start, n_init=1, max_iter=rounds, tol=0.0,
                     algorithm="lloyd").fit(pooled)
    # Assert
    np.testing.assert_allclose(fed.centers, central.cluster_centers_, rtol=0, atol=1e-9)


def test_private_run_differs_from_non_private_run(bank_partners) -> None:
    mats, spec = bank_partners
    start = np.vstack(mats)[:6]
    exact = run_kmeans_inprocess(mats, spec, k=6, epsilon=math.inf, rounds=2,
                                 initial_centers=start, init="random")
    noisy = run_kmeans_inprocess(mats, spec, k=6, epsilon=1.0, rounds=2,
                                 initial_centers=start, init="random", noise_seed=0)
    assert not np.allclose(exact.centers, noisy.centers, atol=1e-6)


def _mixture(seed: int, n: int = 6000, dim: int = 8, components: int = 9) -> np.ndarray:
    """Overlapping Gaussian components of unequal sizes in the scaled box [-0.5, 0.5]^dim."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-0.3, 0.3, size=(components, dim))
    sizes = rng.multinomial(n, rng.dirichlet(np.full(components, 2.0)))
    rows = np.vstack([centre + rng.normal(scale=0.1, size=(size, dim))
                      for centre, size in zip(centres, sizes, strict=True)])
    return np.clip(rows, -0.5, 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_non_private_defaults_reach_the_centralized_cost_at_k_6(seed: int) -> None:
    # Prepare: three partners, each holding a different slab of the first feature (non-IID)
    spec = FeatureSpec(name="mixture", features=tuple(
        NumericFeature(name=f"x{i}", bounds=(0.0, 1.0)) for i in range(8)))
    pooled = _mixture(seed)
    order = np.argsort(pooled[:, 0])
    mats = [pooled[part] for part in np.array_split(order, 3)]
    central = np.mean([kmeans_cost(pooled, KMeans(n_clusters=6, n_init=10, random_state=s)
                                   .fit(pooled).cluster_centers_) for s in range(3)])
    # Execute: the run config's defaults (rounds and candidates left at 0)
    fed = run_kmeans_inprocess(mats, spec, k=6, epsilon=math.inf, seed=seed)
    # Assert
    assert kmeans_cost(pooled, fed.centers) <= 1.02 * central


def test_secagg_lloyd_at_infinite_epsilon_equals_sklearn_lloyd(bank_partners) -> None:
    # Prepare: the same public start for all three
    mats, spec = bank_partners
    pooled = np.vstack(mats)
    start = pooled[np.random.default_rng(3).choice(len(pooled), 6, replace=False)]
    # Execute
    fed = run_kmeans_inprocess(mats, spec, k=6, epsilon=math.inf, rounds=3, noise="secagg",
                               initial_centers=start, init="random", noise_seed=0)
    plain = run_kmeans_inprocess(mats, spec, k=6, epsilon=math.inf, rounds=3,
                                 initial_centers=start, init="random")
    central = KMeans(n_clusters=6, init=start, n_init=1, max_iter=3, tol=0.0,
                     algorithm="lloyd").fit(pooled)
    # Assert: equal up to the quantisation of the sums, far below 1e-6 relative (the sums'
    # step is 2**-30 for 5 partners and the public bound of 1e8 customers each)
    scale = max(abs(plain.centers).max(), 1.0)
    assert np.abs(fed.centers - plain.centers).max() <= 1e-6 * scale
    np.testing.assert_allclose(fed.centers, central.cluster_centers_, rtol=0, atol=1e-9)


@pytest.mark.parametrize("noise_multiplier", [0.5, 2.0])
def test_secagg_release_noise_matches_the_single_gaussian_draw(noise_multiplier: float) -> None:
    # Prepare: 5 partners, each with a zero vector, so the release is the noise alone
    rng = np.random.default_rng(11)
    vectors = [np.zeros(4000) for _ in range(5)]
    # Execute
    [(total,)] = released([[v] for v in vectors], [(2.0, noise_multiplier)], noise="secagg",
                          rng=rng)
    partner = [v for (v,) in released([[v] for v in vectors], [(2.0, noise_multiplier)],
                                      noise="partner", rng=rng)]
    # Assert: secure aggregation releases one sum whose noise sd is the planned sigma
    # within 5 %; partners' own noise adds up to sqrt(5) times that
    sigma = 2.0 * noise_multiplier
    assert np.std(total) / sigma == pytest.approx(1.0, rel=0.05)
    assert np.std(np.sum(partner, axis=0)) / sigma == pytest.approx(math.sqrt(5), rel=0.05)


def _bank_designs(target: str) -> tuple[list, float, float]:
    preset = load_preset("bank")
    spec = load_spec(preset.spec_path)
    designs = [design_data(p.frame, spec, target, segment_centers=None, holdout=0.2, seed=0,
                           source=p.name) for p in preset.partitions(5)]
    return designs, design_norm_bound(spec, target, segment_aware=False), target_bound(spec,
                                                                                       target)


def _ridge_error_bound(designs: list, norm_bound: float, target_bound: float,
                       alpha: float = 1.0) -> float:
    """Largest coefficient error the stated quantisation bound allows (perturbation bound).

    ``A theta = b`` with ``A = Z'Z + alpha P``: entries of ``Z'Z`` and ``Z'y`` are each off
    by at most their plan's :meth:`rounding_error_bound`, so ``||dA||_2 <= dim * e_A``,
    ``||db||_2 <= sqrt(dim) * e_b`` and ``||dtheta|| <= ||A^-1|| (||dA|| ||theta|| + ||db||)
    / (1 - ||A^-1|| ||dA||)``.
    """
    grams, xtys = zip(*(gram_statistics(d.z_train, d.y_train) for d in designs), strict=True)
    gram, xty = np.sum(grams, axis=0), np.sum(xtys, axis=0)
    dim = xty.size
    plan_a, plan_b = (plan_secagg(partners=len(designs), dropouts=0, dim=size, mu=math.inf,
                                  bound=MAX_PARTNER_CUSTOMERS * sens, sensitivity=sens
                                  ).quantization
                      for size, sens in ((gram.size, norm_bound**2),
                                         (dim, norm_bound * target_bound)))
    system = symmetric_from_upper(gram, dim) + alpha * np.diag([1.0] * (dim - 1) + [0.0])
    theta = np.linalg.solve(system, xty)
    inv_norm = 1.0 / np.linalg.svd(system, compute_uv=False).min()
    d_a = dim * plan_a.rounding_error_bound(magnitude=float(np.abs(gram).max()))
    d_b = math.sqrt(dim) * plan_b.rounding_error_bound(magnitude=float(np.abs(xty).max()))
    assert inv_norm * d_a < 0.5
    return inv_norm * (d_a * float(np.linalg.norm(theta)) + d_b) / (1 - inv_norm * d_a)


@pytest.mark.parametrize(("task", "target"), [("ridge", "balance"), ("logistic", "y")])
def test_secagg_response_at_infinite_epsilon_equals_partner_placement(task: str,
                                                                       target: str) -> None:
    # Prepare: bank's 5 partners' design data, as the response stage sees it
    designs, norm_bound, t_bound = _bank_designs(target)
    bounds = {"norm_bound": norm_bound, "target_bound": t_bound}
    # Execute
    exact = run_response_inprocess(designs, task=task, epsilon=math.inf, **bounds)
    secure = run_response_inprocess(designs, task=task, epsilon=math.inf, noise="secagg",
                                    noise_seed=0, **bounds)
    # Assert: the same model up to the quantisation of the summed statistics, 1e-6 relative
    error = np.linalg.norm(secure.coef - exact.coef)
    assert error <= 1e-6 * np.linalg.norm(exact.coef)
    if task == "ridge":  # and within the perturbation bound the stated rounding bound gives
        assert error <= _ridge_error_bound(designs, norm_bound, t_bound)


def test_secagg_release_at_infinite_epsilon_is_the_sum_up_to_rounding() -> None:
    # Prepare: bank's 5 partners' Gram statistics, and the ring the release plans
    designs, norm_bound, _ = _bank_designs("y")
    grams = [gram_statistics(d.z_train, d.y_train)[0] for d in designs]
    sensitivity = norm_bound**2
    plan = plan_secagg(partners=5, dropouts=0, dim=grams[0].size, mu=math.inf,
                       bound=MAX_PARTNER_CUSTOMERS * sensitivity,
                       sensitivity=sensitivity).quantization
    # Execute
    [(total,)] = released([[g] for g in grams], [(sensitivity, 0.0)], noise="secagg",
                          rng=np.random.default_rng(0))
    # Assert: randomised rounding moves each partner's value by less than one step, and the
    # step comes from public values only (62-bit ring, 5 partners, 1e8 customers each)
    exact = np.sum(grams, axis=0)
    error = np.abs(total - exact)
    assert plan.bits == 62 and plan.scale == 2.0**29
    assert error.max() < plan.rounding_error_bound(magnitude=float(np.abs(exact).max()))
    assert error.max() > 0  # the rounding is real, and bounded as stated
    assert error.max() <= 1e-12 * np.abs(exact).max()
