"""Integration test of a real deployment on loopback: a SuperLink, its public Fleet gateway
and three partners (SuperNode + launcher running only the approved app) as separate
processes, TLS and SuperNode authentication on, the app run with ``flwr run``.

The tests run in order on one federation: the full pipeline, refused nodes, a fourth
partner joining a secure-aggregation pipeline and killed mid-run, a partner killed mid-run
with partner noise, and finally that no process is left behind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedprofile.contract.features import transform_frame
from fedprofile.contract.parser import load_spec
from fedprofile.deploy.credentials import create_credentials
from fedprofile.deploy.loopback import LoopbackFederation
from fedprofile.models.segment_model import SegmentModel
from fedprofile.presets.datasets import load_preset
from fedprofile.privacy.ledger import Ledger
from fedprofile.sim.evaluate import evaluate_segments

pytestmark = pytest.mark.slow
PARTNERS = 3
"""Partners started with the federation; a fourth is registered and joins the secagg test."""


@pytest.fixture(scope="module")
def bank():
    return load_preset("bank")


@pytest.fixture(scope="module")
def federation(bank, tmp_path_factory):
    root = tmp_path_factory.mktemp("loopback")
    partners = []
    # the fourth partner holds a sample of everyone's customers (customers at two partners
    # are protected at each with its own budget)
    frames = [(p.name, p.frame) for p in bank.partitions(PARTNERS)]
    frames.append(("fourth", bank.frame.sample(n=4000, random_state=0)))
    for i, (name, frame) in enumerate(frames):
        data = root / "data" / f"partner-{i + 1}.parquet"
        data.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(data)
        home = root / "partners" / f"partner-{i + 1}"
        # no noise seed: a deployed partner draws its noise from OS entropy
        partners.append({"data-path": str(data), "spec": str(bank.spec_path),
                         "partner-name": name, "state-dir": str(home),
                         "output-dir": str(home / "outputs")})
    fed = LoopbackFederation(root=root, partners=partners)
    with fed.running():
        for i in range(PARTNERS):
            fed.start_partner(i)
        fed.wait_for_launchers()
        yield fed
    assert fed.alive() == []


def _run_config(root: Path, bank, out: str, **extra) -> dict:
    return {"spec": str(bank.spec_path), "out-dir": str(root / out), "epsilon": 1.0,
            "expected-partners": PARTNERS, "dataset": "", "timeout": 120.0, **extra}


def _segment_model(path: Path, output: str) -> SegmentModel:
    """The run's segment model; the run's output if it wrote none (``flwr run`` exits 0 even
    when the ServerApp failed)."""
    assert path.is_file(), output[-4000:]
    return SegmentModel.load(path)


def test_pipeline_runs_over_tls_with_authenticated_partners(federation, bank) -> None:
    # Execute: segments, a segment-aware logistic model and local scoring, over real processes
    done = federation.run(_run_config(federation.root, bank, "out", task="pipeline", target="y",
                                      k=6), timeout=900)
    assert done.returncode == 0, (federation.logs / "flwr-run.log").read_text()[-2000:]
    # Assert: the segments meet the simulation's bar on the pooled data
    model = _segment_model(federation.root / "out" / "segments" / "model.json",
                           (federation.logs / "flwr-run.log").read_text())
    spec = load_spec(bank.spec_path)
    pooled = np.vstack([transform_frame(p.frame, spec).matrix
                        for p in bank.partitions(PARTNERS)])
    assert evaluate_segments(model, pooled, seed=0)["cost_ratio"] <= 1.05
    assert sorted(model.partners) == sorted(p["partner-name"]
                                            for p in federation.partners[:PARTNERS])
    assert model.privacy["noise_placement"] == "secagg"  # the default from 3 partners
    response = json.loads((federation.root / "out" / "response" / "model.json").read_text())
    assert response["task"] == "logistic"
    assert response["privacy"]["epsilon_spent"] <= 1.0
    # each partner's launcher checked the app against the partner's own allow-list
    for i in range(PARTNERS):
        log = (federation.logs / f"partner-{i + 1}-exec.log").read_text()
        assert f"app sha256 {federation.app_digest} is approved" in log
    # each partner scored its own customers locally, and its ledger holds the whole plan
    for partner in federation.partners[:PARTNERS]:
        scores = list(Path(partner["output-dir"]).glob("scores-*.parquet"))
        assert len(scores) == 1
        assert set(pd.read_parquet(scores[0]).columns) == {"customer_id", "segment", "score"}
        with Ledger(Path(partner["state-dir"]) / "ledger.sqlite") as ledger:
            spend = ledger.spend(party=partner["partner-name"], delta=1e-6)
            assert spend.epsilon == pytest.approx(1.0, rel=1e-6)


def _exits_refused(proc: subprocess.Popen, timeout: float = 150.0) -> bool:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode != 0


def test_unregistered_key_and_plain_connection_are_refused(federation, tmp_path) -> None:
    # Prepare: a valid key pair the SuperLink has never seen
    stranger = create_credentials(tmp_path, partners=1).partner_keys[0][0]
    # Execute
    unregistered = federation.start_partner(0, key=stranger, role="stranger")
    plain = federation.start_partner(1, tls=False, role="no-tls")
    # Assert: both give up with an error, neither joins (the partners approved the app)
    assert _exits_refused(unregistered)
    assert _exits_refused(plain)
    listing = federation.cli("supernode", "list", "loopback").stdout
    assert listing.count("online") == PARTNERS


def test_secure_aggregation_pipeline_survives_a_partner_killed_mid_run(federation, bank
                                                                      ) -> None:
    # Prepare: a fourth partner joins; 4 partners, up to t = 1 may drop out
    federation.start_partner(PARTNERS)
    config = _run_config(federation.root, bank, "out-secagg", task="pipeline", target="y", k=4,
                         rounds=4, noise="secagg", **{"secagg-dropouts": 1,
                                                      "expected-partners": PARTNERS + 1,
                                                      "min-partners": PARTNERS})
    runner = federation.run_in_background(config)
    victim = federation.partners[PARTNERS]
    # Execute: the fourth partner vanishes between two secure k-means rounds
    federation.kill_partner_after_release(PARTNERS)
    output, _ = runner.communicate(timeout=900)
    (federation.logs / "flwr-run-secagg.log").write_text(output, encoding="utf-8")
    # Assert: both stages finished with the three others, each under secure aggregation
    assert runner.returncode == 0, output[-3000:]
    model = _segment_model(federation.root / "out-secagg" / "segments" / "model.json", output)
    assert sorted(model.partners) == sorted(p["partner-name"]
                                            for p in federation.partners[:PARTNERS])
    assert victim["partner-name"] in model.params["dropped_partners"]
    assert model.privacy["noise_placement"] == "secagg"
    response = json.loads((federation.root / "out-secagg" / "response" / "model.json"
                           ).read_text())
    assert response["privacy"]["noise_placement"] == "secagg"
    assert response["privacy"]["epsilon_spent"] <= 1.0
    assert victim["partner-name"] not in response["partners"]
    # every survivor noted its secure sums: shares, t = 1, the guaranteed noise
    for partner in federation.partners[:PARTNERS]:
        with Ledger(Path(partner["state-dir"]) / "ledger.sqlite") as ledger:
            notes = [json.loads(n["message"]) for n in ledger.notes(run_id=model.params["run_id"])
                     if n["kind"] == "secagg"]
        assert notes and all(r["dropouts"] == 1 for n in notes for r in n["releases"])


def test_partner_killed_mid_run_is_reported_and_the_run_completes(federation, bank) -> None:
    # Prepare: start a segmentation run in the background
    config = _run_config(federation.root, bank, "out-fault", k=4, rounds=6, noise="partner",
                         **{"min-partners": 2})
    runner = federation.run_in_background(config)
    victim = federation.partners[2]
    # Execute: once the victim has released something in this run, kill its SuperNode
    federation.kill_partner_after_release(2)
    output, _ = runner.communicate(timeout=600)
    (federation.logs / "flwr-run-fault.log").write_text(output, encoding="utf-8")
    # Assert: the run finished with the two others, naming who left
    assert runner.returncode == 0, output[-2000:]
    model = _segment_model(federation.root / "out-fault" / "model.json", output)
    assert victim["partner-name"] not in model.partners
    assert len(model.partners) == 2
    assert victim["partner-name"] in model.params["dropped_partners"]
