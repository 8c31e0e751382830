"""End-to-end simulations on Flower's simulation engine over the shipped bank data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans

from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec
from fedprofile.errors import FedprofileError
from fedprofile.io.matrix_store import stored_values
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.ledger import Ledger
from fedprofile.sim.runner import SimulationResult, simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bank():
    return load_preset("bank")


@pytest.fixture(scope="module")
def private_run(bank, tmp_path_factory) -> tuple[SimulationResult, Path]:
    root = tmp_path_factory.mktemp("bank-private")
    result = simulate(bank.partitions(5), spec_path=bank.spec_path,
                                  out_dir=root / "out", state_dir=root / "state",
                                  run_config={"k": 6, "epsilon": 1.0, "delta": 1e-6,
                                              "run-id": "e2e-bank-private"},
                                  seed=0, capture=root / "capture")
    return result, root


def test_private_run_writes_model_metrics_and_report(private_run) -> None:
    result, _ = private_run
    for name in ("model.json", "metrics.json", "report.html"):
        assert (result.out_dir / name).stat().st_size > 0
    metrics = json.loads((result.out_dir / "metrics.json").read_text())
    assert metrics["n_partners"] == 5
    assert metrics["kmeans"]["cost_ratio"] <= 1.05
    assert not metrics["privacy"]["non_private"]


def test_private_run_spends_at_most_its_target_epsilon(private_run) -> None:
    result, root = private_run
    privacy = result.model.privacy
    assert privacy["epsilon_spent"] <= 1.0 + 1e-9
    assert privacy["epsilon_spent"] == pytest.approx(1.0, rel=1e-6)
    partner_dbs = sorted((root / "state" / "partners").glob("*/ledger.sqlite"))
    assert len(partner_dbs) == 5
    for db in partner_dbs:
        with Ledger(db) as ledger:
            (party,) = ledger.parties()
            spend = ledger.spend(party=party, delta=1e-6)
            assert spend.releases == 2 * (1 + result.model.params["rounds"])
            assert spend.epsilon == pytest.approx(privacy["epsilon_spent"], rel=1e-9)
    with Ledger(result.out_dir / "federation_ledger.sqlite") as fed:
        assert len(fed.parties()) == 5


def test_no_customer_value_or_id_leaves_a_partner(private_run, bank) -> None:
    # Prepare: every byte each partner sent, and values that must not be in them
    result, root = private_run
    captured = b"".join(p.read_bytes() for p in (root / "capture").rglob("*.bin"))
    # secure aggregation (the default for 5 partners): the announcement, two key-setup
    # messages, then a masked reply for the start and every round, and unmask replies from
    # 3 partners (the threshold), from all 5 in the last round
    assert result.model.privacy["noise_placement"] == "secagg"
    rounds = result.model.params["rounds"]
    assert len(list((root / "capture").rglob("*.bin"))) == 5 * (3 + 1 + rounds) + (
        3 * rounds + 5)
    spec = load_spec(bank.spec_path)
    part = bank.partitions(5)[0].frame
    rows = transform_frame(part, spec).matrix[:300]
    # Assert: no customer vector, no customer id, no raw balance
    for row in rows:
        assert row.astype(np.float64).tobytes() not in captured
    for cid in part["customer_id"].head(300):
        assert cid.encode() not in captured
    # balances of 5 digits or more: a shorter pattern turns up by chance in the megabytes of
    # uniformly random masked vectors and ciphertexts secure aggregation sends
    long_balances = part["balance"][part["balance"].abs() >= 10_000].head(300)
    assert len(long_balances) >= 100
    for balance in long_balances:
        assert f",{balance};".encode() not in captured


def test_non_private_run_through_flower_is_exact_lloyd(bank, tmp_path) -> None:
    # Prepare / Execute: epsilon = inf through the Flower simulation
    parts = bank.partitions(5)
    result = simulate(parts, spec_path=bank.spec_path, out_dir=tmp_path / "out",
                                  state_dir=tmp_path / "state", evaluate=False, seed=1,
                                  run_config={"k": 5, "epsilon": math.inf, "rounds": 3})
    # Assert: Lloyd from the same start (the centres after the refining round) on the
    # pooled data
    spec = load_spec(bank.spec_path)
    pooled = stored_values(np.vstack([transform_frame(p.frame, spec).matrix for p in parts]))
    assert result.model.history[1]["refined_cells"] > 5
    start = np.asarray(result.model.history[1]["centers_scaled"])
    central = KMeans(n_clusters=5, init=start, n_init=1, max_iter=2, tol=0.0,
                     algorithm="lloyd").fit(pooled)
    np.testing.assert_allclose(result.model.cluster_centers_, central.cluster_centers_,
                               atol=1e-9, rtol=0)
    assert result.model.privacy["non_private"] is True

    # and a private run in the same state folder still starts (the budget left is not NaN)
    after = simulate(parts, spec_path=bank.spec_path, out_dir=tmp_path / "out2",
                     state_dir=tmp_path / "state", evaluate=False, seed=1,
                     run_config={"k": 5, "epsilon": 1.0, "rounds": 2})
    assert after.model.privacy["epsilon_spent"] == pytest.approx(1.0, rel=1e-6)


def test_partner_policy_refuses_a_run_over_its_per_run_limit(bank, tmp_path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("max_epsilon_per_run = 0.5\ntotal_epsilon = 4.0\n")
    with pytest.raises(FedprofileError, match=r"all 3 partners: its policy allows at most "
                                              r"epsilon = 0\.5 per run; this run requests "
                                              r"epsilon = 1\.") as info:
        simulate(bank.partitions(3), spec_path=bank.spec_path,
                             out_dir=tmp_path / "out", state_dir=tmp_path / "state",
                             run_config={"k": 4, "epsilon": 1.0}, policy=policy, evaluate=False)
    assert "nothing was released" in str(info.value)  # refused before Flower starts
    for db in (tmp_path / "state" / "partners").glob("*/ledger.sqlite"):
        with Ledger(db) as ledger:
            assert ledger.events() == [] and ledger.notes() == []
