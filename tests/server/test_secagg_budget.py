"""Under secagg a run is planned so that the RDP-exact epsilon of its Skellam releases is the
target, and the model reports that epsilon."""

from __future__ import annotations

import numpy as np
import pytest

from fedprofile.config import RunConfig
from fedprofile.privacy.secagg.noise import ORDERS, rdp_epsilon
from fedprofile.protocol.secagg import SecureSum
from fedprofile.server.kmeans import plan_kmeans
from fedprofile.server.secure import secagg_budget
from fedprofile.server.session import privacy_record


@pytest.mark.parametrize("epsilon", [0.5, 1.0, 4.0])
def test_skellam_releases_compose_to_the_target_in_rdp(epsilon: float) -> None:
    # Prepare
    cfg = secagg_budget(RunConfig.from_mapping({"epsilon": epsilon, "noise": "secagg",
                                                "rounds": 3}))
    plan = plan_kmeans(epsilon=cfg.epsilon, delta=cfg.delta, lloyd_rounds=3, norm_bound=2.0)

    # Execute: the curves of every release as the partners plan them (7 partners, t = 2)
    curve = np.zeros_like(ORDERS)
    for rnd in plan.rounds:
        parts = SecureSum((("sums", 6 * 10, 2.0, rnd.sum_noise_multiplier),
                           ("counts", 6, 1.0, rnd.count_noise_multiplier)))
        curve += sum(p.rdp() for p in parts.plans(7, 2))
    record = privacy_record(plan, "secagg")

    # Assert: exactly the target in RDP, and the model says so
    assert cfg.epsilon < epsilon
    assert rdp_epsilon(curve, cfg.delta) <= epsilon * (1 + 1e-9)
    assert rdp_epsilon(curve, cfg.delta) == pytest.approx(epsilon, rel=1e-3)
    assert record["epsilon_spent"] == pytest.approx(epsilon, rel=1e-9)
    assert record["accountant"] == "rdp-skellam" and record["noise_placement"] == "secagg"


def test_partner_noise_keeps_the_gdp_plan() -> None:
    cfg = RunConfig.from_mapping({"epsilon": 1.0})
    assert secagg_budget(cfg) is cfg
    plan = plan_kmeans(epsilon=1.0, delta=1e-6, lloyd_rounds=3, norm_bound=2.0)
    assert privacy_record(plan)["accountant"] == "gdp-exact"


@pytest.mark.parametrize("noise", ["partner", "secagg"])
def test_the_inprocess_reference_plans_like_the_flower_app(noise: str, monkeypatch) -> None:
    from fedprofile.contract.spec import FeatureSpec, NumericFeature
    from fedprofile.sim import inprocess

    # Prepare: record the epsilon each plan is made with
    planned: list[float] = []
    real = inprocess.plan_kmeans
    monkeypatch.setattr(inprocess, "plan_kmeans",
                        lambda **kw: planned.append(kw["epsilon"]) or real(**kw))
    spec = FeatureSpec(name="m", features=(NumericFeature(name="x", bounds=(0.0, 1.0)),))
    rows = np.random.default_rng(0).uniform(-0.5, 0.5, size=(400, 1))

    # Execute
    inprocess.run_kmeans_inprocess([rows[:200], rows[200:]], spec, k=2, epsilon=1.0,
                                   rounds=2, noise=noise, noise_seed=0)

    # Assert: the budget the Flower app plans with (secagg: the RDP-exact one)
    expected = secagg_budget(RunConfig.from_mapping({"epsilon": 1.0, "noise": noise}))
    assert planned == [pytest.approx(expected.epsilon, rel=1e-12)]
    assert (planned[0] < 1.0) == (noise == "secagg")
