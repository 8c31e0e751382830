"""End-to-end: ``--k auto`` and a refresh from a published model, through Flower's simulation."""

from __future__ import annotations

import json
import math

import pytest

from fedprofile.errors import FedprofileError
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.ledger import Ledger
from fedprofile.sim.runner import simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bank():
    return load_preset("bank")


@pytest.fixture(scope="module")
def auto_run(bank, tmp_path_factory):
    root = tmp_path_factory.mktemp("bank-auto")
    result = simulate(bank.partitions(5), spec_path=bank.spec_path, out_dir=root / "out",
                      state_dir=root / "state", evaluate=False, seed=0,
                      run_config={"k": "auto", "k-min": 2, "k-max": 8, "epsilon": 1.0,
                                  "run-id": "e2e-bank-auto"})
    return result, root


def _partner_releases(root) -> list[int]:
    counts = []
    for db in sorted((root / "state" / "partners").glob("*/ledger.sqlite")):
        with Ledger(db) as ledger:
            (party,) = ledger.parties()
            counts.append(ledger.spend(party=party, delta=1e-6).releases)
    return counts


def test_k_auto_chooses_in_range_publishes_every_segment_and_costs_no_extra_epsilon(
        auto_run) -> None:
    result, root = auto_run
    model = result.model
    choice = model.params["k_auto"]
    assert 2 <= model.k <= 8 and model.params["k"] == model.k
    assert choice["curve"][0]["k"] == 2
    best = max((r for r in choice["curve"] if r["feasible"]), key=lambda r: r["silhouette"])
    assert best["k"] == model.k
    assert not model.suppressed_.any()
    # the same releases as a fixed-k run: start + the planned rounds (12 under secure
    # aggregation at epsilon = 1, the default for 5 partners), sums and counts
    assert model.privacy["epsilon_spent"] == pytest.approx(1.0, rel=1e-6)
    assert model.privacy["noise_placement"] == "secagg" and model.params["rounds"] == 12
    assert _partner_releases(root) == [2 * (1 + 12)] * 5
    html = (result.out_dir / "report.html").read_text()
    assert "How many segments" in html and f"k = {model.k} was chosen" in html


def test_refresh_starts_from_the_published_centres_and_spends_all_on_rounds(
        auto_run, bank, tmp_path) -> None:
    previous, _ = auto_run
    result = simulate(bank.partitions(5), spec_path=bank.spec_path, out_dir=tmp_path / "out",
                      state_dir=tmp_path / "state", evaluate=False, seed=1,
                      run_config={"start-from": str(previous.out_dir / "model.json"),
                                  "epsilon": 1.0, "rounds": 2})
    model = result.model
    assert model.k == previous.model.k and model.params["init"] == "published"
    assert [h["stage"] for h in model.history] == ["kmeans", "kmeans"]
    assert model.privacy["epsilon_spent"] == pytest.approx(1.0, rel=1e-6)
    assert _partner_releases(tmp_path) == [2 * 2] * 5
    moved = model.params["start_from"]
    assert moved["previous_sizes"] == pytest.approx(previous.model.segment_sizes_.tolist())
    assert len(moved["center_shift_scaled"]) == model.k
    assert all(math.isfinite(x) for x in moved["center_shift_scaled"])
    assert "What moved since the last model" in (result.out_dir / "report.html").read_text()


def test_refresh_from_a_model_of_another_contract_is_refused(auto_run, tmp_path) -> None:
    previous, _ = auto_run
    hill = load_preset("hillstrom")
    doc = json.loads((previous.out_dir / "model.json").read_text())
    (tmp_path / "bank-model.json").write_text(json.dumps(doc))
    with pytest.raises(FedprofileError, match="another contract"):
        simulate(hill.partitions(3), spec_path=hill.spec_path, out_dir=tmp_path / "out",
                 state_dir=tmp_path / "state", evaluate=False, seed=0,
                 run_config={"start-from": str(tmp_path / "bank-model.json"), "epsilon": 1.0})
