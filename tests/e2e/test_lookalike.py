"""Lookalike audiences end to end through Flower on the bank data, and its refusals.

Five partners (bank split by job); the seed is the ``management`` partner's ``y = yes``
customers. The model must find held-out seed customers better than chance at ε = ∞ and
ε = 1, every partner's ledger must hold the ``lookalike`` releases of the plan, and each
partner's audience (written locally) must leave out the seed owner's seed.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from fedprofile.contract.lookalike import SeedAudience, seed_labels
from fedprofile.errors import FedprofileError
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.ledger import Ledger
from fedprofile.sim.runner import partner_tables, simulate

pytestmark = pytest.mark.slow

OWNER = "management"
SEED = {"task": "lookalike", "seed-partner": OWNER, "seed-expr": 'y == "yes"',
        "lookalike-size": 300}


@pytest.fixture(scope="module")
def bank():
    return load_preset("bank")


@pytest.fixture(scope="module", params=[math.inf, 1.0], ids=["eps-inf", "eps-1"])
def run(request, bank, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lookalike")
    parts = bank.partitions(5)
    result = simulate(parts, spec_path=bank.spec_path, out_dir=tmp / "out",
                      state_dir=tmp / "state", seed=0,
                      run_config={**SEED, "epsilon": request.param, "run-id": "e2e-lookalike"})
    return request.param, parts, result, tmp


def test_lookalike_finds_held_out_seed_customers(run) -> None:
    eps, _, result, _ = run
    quality = result.metrics["lookalike"]
    assert quality["held_out"]["seed"] >= 50
    assert quality["federated"]["auc"] > 0.5
    assert quality["federated"]["top_decile_lift"] > 1.0
    # the non-private run is the centralized model up to the Böhning steps
    if math.isinf(eps):
        assert abs(quality["federated"]["auc"] - quality["centralized"]["auc"]) < 0.02


def test_every_partner_is_charged_the_lookalike_plan(run, bank) -> None:
    eps, parts, result, tmp = run
    spent = float(result.model.privacy["epsilon_spent"])  # "inf" in the JSON document
    assert (math.isinf(spent) if math.isinf(eps) else spent == pytest.approx(eps, rel=1e-6))
    ledgers = sorted((tmp / "state" / "partners").glob("*/ledger.sqlite"))
    assert len(ledgers) == len(parts)
    for db in ledgers:
        with Ledger(db) as ledger:
            events = ledger.events(run_id="e2e-lookalike")
            assert [e.component for e in events] == ["gram", "gradient", "gradient",
                                                     "gradient"]
            assert {e.stage for e in events} == {"lookalike"}
    assert set(result.model.privacy["epsilon_per_partner"]) == {p.name for p in parts}


def test_audiences_are_local_and_leave_out_the_seed(run, bank) -> None:
    _, parts, result, tmp = run
    assert result.metrics["selected"] == {p.name: 300 for p in parts}
    owner = next(p for p in parts if p.name == OWNER)
    table = partner_tables([owner], bank.spec_path, tmp / "state")[0]
    seed = seed_labels(table, SeedAudience(partner=OWNER, expr='y == "yes"'))
    files = list((tmp / "state" / "partners").glob(f"*{OWNER}/outputs/lookalike-*.parquet"))
    audience = pd.read_parquet(files[0])
    assert list(audience.columns) == ["row", "score", "rank"]
    assert not seed[audience["row"].to_numpy()].any()
    assert "held-out seed membership" in result.report.read_text(encoding="utf-8")


def _refused(bank, tmp: Path, config: dict, policy: str | None = None) -> str:
    policy_path = None
    if policy is not None:
        policy_path = tmp / "policy.toml"
        policy_path.write_text(policy, encoding="utf-8")
    with pytest.raises(FedprofileError) as info:
        simulate(bank.partitions(5), spec_path=bank.spec_path, out_dir=tmp / "out",
                 state_dir=tmp / "state", seed=0, policy=policy_path, evaluate=False,
                 run_config={"epsilon": 1.0, "task": "lookalike", **config})
    for db in (tmp / "state" / "partners").glob("*/ledger.sqlite"):
        with Ledger(db) as ledger:
            assert ledger.events() == []
    return str(info.value)


@pytest.mark.parametrize(("config", "message"), [
    ({"seed-partner": "nobody", "seed-column": "y"}, "seed partner 'nobody' is not in"),
    ({"seed-partner": "blue-collar", "seed-column": "converted"},
     "seed column 'converted' does not exist"),
    ({"seed-partner": "blue-collar", "seed-expr": 'yy == "yes"'}, "do not exist"),
    ({"seed-partner": "blue-collar", "seed-expr": 'y == "yes" and age > 94'},
     "smaller than this partner's minimum of 100 customers"),
])
def test_bad_seeds_are_refused_before_any_release(bank, tmp_path, config, message) -> None:
    text = _refused(bank, tmp_path, config)
    assert message in text


def test_a_policy_can_forbid_the_lookalike_stage(bank, tmp_path) -> None:
    policy = ('allowed_stages = ["profile", "kmeans", "ridge", "logistic", "score"]\n'
              "max_epsilon_per_run = 2.0\n")
    text = _refused(bank, tmp_path, {"seed-partner": "blue-collar", "seed-column": "y"},
                    policy)
    assert "stage 'lookalike' is not in its allowed stages" in text
